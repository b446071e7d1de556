"""The agent's Sparkplug peers in tests, played by pysparkplug (an independent Sparkplug B
implementation: its own protobuf payload classes, topic parsing, alias and datatype handling,
and its own paho-based MQTT client).

- ``PLC``: an edge node publishing sensor data (births with aliases, DDATA by alias, NDEATH as
  its will), answering the rebirth requests it receives on its NCMD topic;
- ``Host``: a Sparkplug host application subscribed to a group; it decodes every message with
  pysparkplug (aliases resolved through the births it saw) and records decoding errors.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import paho.mqtt.client as paho
import pysparkplug as psp
from helpers import Mosquitto, free_port

# pysparkplug 0.6.1 was written for paho-mqtt 1.x. The one 1.x call that paho-mqtt 2 removed is
# Client.message_retry_set, which paho 1.6 had already made a no-op ("No longer used, remove in
# version 2.0"); give it back as that no-op. Everything else it uses is paho's version-1
# callback API, which paho 2 keeps.
if not hasattr(paho.Client, "message_retry_set"):
    paho.Client.message_retry_set = lambda self, retry: None  # type: ignore[attr-defined]

DT = psp.DataType


def ms(t: float | None = None) -> int:
    return int((time.time() if t is None else t) * 1000)


class PLC:
    """An edge node with devices; ``devices`` maps device id -> [(metric name, alias, datatype, value)]."""

    def __init__(self, broker: Mosquitto, group: str, node: str, devices: dict[str, list[tuple[str, int, DT, Any]]], answer_rebirth: bool = True) -> None:
        self.group, self.node, self.devices = group, node, devices
        self.answer_rebirth = answer_rebirth
        self.lock = threading.Lock()
        self.seq = 0
        self.bdseq = 0
        self.ncmds: list[psp.Message] = []
        self.client = psp.Client(client_id=f"plc-{free_port()}")
        self.client.subscribe(psp.Topic(group_id=group, message_type=psp.MessageType.NCMD, edge_node_id=node), psp.QoS.AT_LEAST_ONCE, self._on_ncmd)
        bd = psp.Metric(ms(), "bdSeq", DT.INT64, value=self.bdseq)
        self.client.set_will(psp.Message(self._topic(psp.MessageType.NDEATH), psp.NDeath(ms(), bd), psp.QoS.AT_LEAST_ONCE, False))
        self.connected = threading.Event()
        self.client.connect(broker.host, port=broker.port, blocking=False, callback=lambda c: self.connected.set())
        if not self.connected.wait(10):
            raise TimeoutError("PLC did not connect")

    def _topic(self, mtype: psp.MessageType, device: str | None = None) -> psp.Topic:
        return psp.Topic(group_id=self.group, message_type=mtype, edge_node_id=self.node, device_id=device)

    def _on_ncmd(self, client: Any, message: psp.Message) -> None:
        with self.lock:
            self.ncmds.append(message)
        if self.answer_rebirth and any(m.name == "Node Control/Rebirth" and m.value for m in message.payload.metrics):
            self.birth()

    def _next(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def birth(self, values: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.seq = 0
            t = ms()
            node_metrics = (
                psp.Metric(t, "bdSeq", DT.INT64, value=self.bdseq),
                psp.Metric(t, "Node Control/Rebirth", DT.BOOLEAN, value=False),
            )
            self._send(psp.MessageType.NBIRTH, None, psp.NBirth(t, 0, node_metrics))
            for device, metrics in self.devices.items():
                ms_ = tuple(psp.Metric(t, name, dt, value=(values or {}).get(name, v), alias=alias) for name, alias, dt, v in metrics)
                self._send(psp.MessageType.DBIRTH, device, psp.DBirth(t, self._next(), ms_))

    def ddata(self, device: str, values: dict[int, Any], ts: float | None = None) -> None:
        """Values by alias only (no name, no datatype), as the specification asks of DDATA."""
        dts = {alias: dt for _, alias, dt, _ in self.devices[device]}
        with self.lock:
            t = ms(ts)
            metrics = tuple(psp.Metric(t, None, dts[alias], value=v, alias=alias) for alias, v in values.items())
            self._send(psp.MessageType.DDATA, device, psp.DData(t, self._next(), metrics))

    def skip_seq(self) -> None:
        with self.lock:
            self._next()

    def _send(self, mtype: psp.MessageType, device: str | None, payload: Any) -> None:
        self.client.publish(psp.Message(self._topic(mtype, device), payload, psp.QoS.AT_MOST_ONCE, False), include_dtypes=mtype in (psp.MessageType.NBIRTH, psp.MessageType.DBIRTH))

    def rebirth_requests(self) -> int:
        with self.lock:
            return sum(1 for m in self.ncmds if any(x.name == "Node Control/Rebirth" and x.value for x in m.payload.metrics))

    def close(self) -> None:
        self.client.disconnect()


class Host:
    """A Sparkplug host application on ``spBv1.0/{group}/#`` (and, if ``host_id``, its STATE)."""

    def __init__(self, broker: Mosquitto, group: str) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[float, psp.Message]] = []
        self.raw: list[tuple[str, bytes, int, bool]] = []
        self.errors: list[str] = []
        self.client = psp.Client(client_id=f"host-{free_port()}")
        # pysparkplug decodes in its callback; a payload it cannot decode raises there, so the
        # raw message is kept too and decode errors are recorded by a second, plain callback.
        self.client.subscribe(psp.Topic(group_id=group, message_type=psp.MULTI_LEVEL_WILDCARD), psp.QoS.AT_MOST_ONCE, self._on_message)
        inner = self.client._client
        original = inner._handle_on_message

        def keep_raw(message: Any) -> None:
            with self.lock:
                self.raw.append((message.topic, bytes(message.payload), message.qos, bool(message.retain)))
            try:
                original(message)
            except Exception as exc:  # pysparkplug could not decode it
                with self.lock:
                    self.errors.append(f"{message.topic}: {exc!r}")

        inner._handle_on_message = keep_raw
        self.connected = threading.Event()
        self.client.connect(broker.host, port=broker.port, blocking=False, callback=lambda c: self.connected.set())
        if not self.connected.wait(10):
            raise TimeoutError("host did not connect")
        time.sleep(0.2)  # the subscription is sent right after CONNACK

    def _on_message(self, client: Any, message: psp.Message) -> None:
        with self.lock:
            self.messages.append((time.time(), message))

    def of(self, mtype: psp.MessageType, device: str | None = None) -> list[psp.Message]:
        with self.lock:
            return [m for _, m in self.messages if m.topic.message_type == mtype and (device is None or m.topic.device_id == device)]

    def all(self) -> list[psp.Message]:
        with self.lock:
            return [m for _, m in self.messages]

    def timed(self) -> list[tuple[float, psp.Message]]:
        with self.lock:
            return list(self.messages)

    def state(self, host_id: str, online: bool, ts_ms: int, broker: Mosquitto | None = None) -> None:
        """Publish a primary host STATE (Sparkplug 3.0: JSON, QoS 1, retained)."""
        inner = self.client._client
        info = inner.publish(f"spBv1.0/STATE/{host_id}", json.dumps({"online": online, "timestamp": ts_ms}), qos=1, retain=True)
        info.wait_for_publish(5)

    def rebirth(self, group: str, node: str) -> None:
        payload = psp.NCmd(ms(), (psp.Metric(ms(), "Node Control/Rebirth", DT.BOOLEAN, value=True),))
        self.client.publish(psp.Message(psp.Topic(group_id=group, message_type=psp.MessageType.NCMD, edge_node_id=node), payload, psp.QoS.AT_MOST_ONCE, False))

    def close(self) -> None:
        self.client.disconnect()
