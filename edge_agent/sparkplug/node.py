"""The agent as a Sparkplug B edge node: SCADA discovers every series and its alarm state.

**A connection of its own.** The specification requires every Sparkplug client to connect
with a clean session (MQTT 5: session expiry 0) and to register its NDEATH as the will;
with a primary host configured, the edge node must drop its connection when that host goes
offline. The agent's main connection needs the opposite on all three counts: a persistent
session so the broker keeps QoS 1 readings while the agent is away, a retained JSON status
``offline`` as its will (the JSON contract), and staying connected whatever a SCADA host does.
One connection could satisfy only one side, so the edge node has a second one (client id
``{mqtt client id}-sparkplug``): one more socket and keepalive per gateway, and a second
supervisor loop (the same ``MqttLink``: TLS, credentials, MQTT 5 -> 3.1.1, backoff). Each
link reports its own state in ``/healthz``; alarms on the JSON topics never wait on it.

**Session.** On every connection: subscribe NCMD (and STATE of ``primary_host_id``), then
NBIRTH (seq 0, the bdSeq of this CONNECT's will, ``Node Control/Rebirth`` = false, node
metrics) and one DBIRTH per device with the *current* value of every metric, then data:
alarm state changes at once, scores, thresholds, model versions and node figures at most
every ``score_interval_s``, only what changed (``score_deadband`` for scores). Every
message's seq is one more than the previous (mod 256), assigned when it is written to the
socket. A rebirth request (NCMD) repeats the birth sequence with the same bdSeq; requests
closer than ``rebirth_min_interval_s`` are answered by one. A clean stop sends NDEATH (MQTT
3.1.1: published, then DISCONNECT; MQTT 5: DISCONNECT with reason 0x04, which makes the
broker publish the will).

**Alarm durability.** An alarm state change is committed to a second outbox
(``state_dir/sparkplug_outbox.sqlite``, the same ``Outbox`` class) in the callback that raised
it; readings are acknowledged to the broker only once both outboxes have committed. A row
holds the change, not the wire bytes: it is encoded when published, with the session's seq
and aliases. Rows committed before the current birth (during an outage, before a restart,
while waiting for the primary host) are published after the births with ``is_historical``
set: the host keeps them in its history without overwriting the live values the births
carried. DDATA are QoS 0, as the specification requires; what the births carry is the
guarantee that a host never misses the current state.

**Here**: the session (connection hooks, bdSeq, seq, STATE, rebirth requests, the birth
sequence, the outbox pump and the periodic pass). What it publishes is built elsewhere: the
node's own NBIRTH, NDEATH and NDATA in ``node_metrics.py``, the series' devices in
``series_devices.py``, the machines' in ``machine_devices.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from edge_agent.mqtt_link import MqttLink
from edge_agent.outbox import Outbox, OutMessage
from edge_agent.sparkplug import node_metrics, schema
from edge_agent.sparkplug.bdseq import FILE_NAME as BDSEQ_FILE
from edge_agent.sparkplug.bdseq import BdSeqStore
from edge_agent.sparkplug.schema import REBIRTH, Payload, now_ms
from edge_agent.sparkplug.series_devices import SeriesDevices

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)

_MAX_COMMAND_BYTES = 65536


class EdgeNode:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        cfg = agent.cfg
        sp = cfg.sparkplug
        self.cfg = sp
        self.group = sp.group_id
        self.node_id = sp.edge_node_id or cfg.gateway_id
        self.primary = sp.primary_host_id
        self.ncmd_topic = schema.topic(self.group, "NCMD", self.node_id)
        self.ndeath_topic = schema.topic(self.group, "NDEATH", self.node_id)
        self.state_topic = f"{schema.NAMESPACE}/STATE/{self.primary}" if self.primary else None
        self.series_devices = SeriesDevices(self, sp.device_segments)
        self.bdseq_store = BdSeqStore(cfg.state_path(BDSEQ_FILE))
        self.bdseq = 0
        self._persist_next = False
        self.outbox = Outbox(
            cfg.state_path("sparkplug_outbox.sqlite"),
            synchronous=cfg.outbox.synchronous,
            max_rows=cfg.outbox.max_rows,
            max_bytes=cfg.outbox.max_bytes,
            max_age_s=cfg.outbox.max_age_s,
            retry_s=cfg.outbox.retry_s,
        )
        link_cfg = cfg.mqtt.model_copy(update={"clean_start": True, "session_expiry_s": 0})
        self.link = MqttLink(
            link_cfg,
            sp.client_id or f"{cfg.client_id}-sparkplug",
            on_message=self.on_message,
            on_connected=self.on_connected,
            on_disconnected=self.on_disconnected,
            on_ack=lambda mid, reason: None,
            will=self.will,
            before_connect=self.before_connect,
        )
        self.link.subscribe(self.ncmd_topic, 1)
        if self.state_topic:
            self.link.subscribe(self.state_topic, 1)
        # Session state (one MQTT connection).
        self.session = 0
        self.born = False
        self.born_at = float("inf")
        self.seq = 0
        self.node_sent: dict[str, Any] = {}  # node metric -> value last published
        self.birthing: asyncio.Task[None] | None = None
        self.host_online = False
        self.host_ts: float | None = None
        self.last_birth = -1e9
        self._rebirth_timer: asyncio.TimerHandle | None = None
        self.machine_devices: Any = None  # machine_devices.MachineDevices when the agent has machines
        self._tasks: list[asyncio.Task[Any]] = []
        # Counters (healthcheck).
        self.births = 0
        self.rebirth_requests = 0
        self.messages = 0
        self.bad_commands = 0

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        agent = self.agent
        self.bdseq = await loop.run_in_executor(agent.executor, self.bdseq_store.load)
        await loop.run_in_executor(agent.executor, self.bdseq_store.save, (self.bdseq + 1) & 0xFF)
        self.outbox.on_ready = self._outbox_ready
        self.outbox.start(loop)
        main = agent.outbox
        # A reading is acknowledged only when the alarms it raised are committed in both outboxes.
        agent.link.ack_gate = lambda: main.durable() and self.outbox.durable()
        agent.hooks_on_alarm.append(self.series_devices.on_alarm)
        if agent.machines is not None:  # each machine a device of its own (machine_devices.py)
            from edge_agent.sparkplug.machine_devices import MachineDevices

            self.machine_devices = MachineDevices(self, agent.machines)
        log.info("Sparkplug edge node %s/%s (bdSeq %d)%s", self.group, self.node_id, self.bdseq,
                 f", waiting for primary host {self.primary!r}" if self.primary else "")

    def tasks(self) -> list[asyncio.Task[Any]]:
        self._tasks = [
            asyncio.create_task(self.link.run(), name="sparkplug-link"),
            asyncio.create_task(self._periodic(), name="sparkplug-data"),
        ]
        return self._tasks

    async def stop(self) -> None:
        self._end_session()
        for t in self._tasks:
            t.cancel()
        if self.link.connected.is_set():
            if self.link.protocol == "5":
                await self.link.stop(reason_code=0x04)  # the broker publishes the will: NDEATH
            else:
                self.link.publish(self.ndeath_topic, node_metrics.ndeath(self.bdseq), qos=0)
                await self.link.stop()
        else:
            await self.link.stop()
        await self.outbox.close(1.0)

    def problems(self) -> list[str]:
        out = []
        if not self.link.connected.is_set():
            out.append(f"sparkplug edge node: broker not connected: {self.link.last_error or 'connecting'}")
        if self.outbox.degraded:
            out.append(f"sparkplug outbox degraded: {self.outbox.degraded}")
        if self.bdseq_store.error:
            out.append(f"sparkplug: {self.bdseq_store.error}")
        return out

    def stats(self) -> dict[str, Any]:
        return {"connected": self.link.connected.is_set(), "born": self.born, "bdseq": self.bdseq, "births": self.births,
                "rebirth_requests": self.rebirth_requests, "messages": self.messages, "primary_host_online": self.host_online if self.primary else None}

    # ---- connection hooks ------------------------------------------------------------------
    async def before_connect(self) -> None:
        if self._persist_next:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.agent.executor, self.bdseq_store.save, (self.bdseq + 1) & 0xFF)
            self._persist_next = False

    def will(self) -> tuple[str, bytes, int, bool]:
        # tck-id-message-flow-edge-node-birth-publish-will-message-*: NDEATH, QoS 1, not retained.
        return self.ndeath_topic, node_metrics.ndeath(self.bdseq), 1, False

    async def on_connected(self) -> None:
        self._end_session()
        self.host_online = False  # this connection must see the primary host's STATE itself
        if self.primary:
            log.info("sparkplug: connected; waiting for primary host %r to be online (STATE)", self.primary)
        else:
            self._start_birth()

    def on_disconnected(self) -> None:
        self._end_session()
        # The next CONNECT carries the next bdSeq; it is saved before that CONNECT is sent.
        self.bdseq = (self.bdseq + 1) & 0xFF
        self._persist_next = True

    def _end_session(self) -> None:
        self.session += 1
        self.born = False
        self.born_at = float("inf")
        if self.birthing is not None:
            self.birthing.cancel()
            self.birthing = None
        if self._rebirth_timer is not None:
            self._rebirth_timer.cancel()
            self._rebirth_timer = None

    # ---- commands and STATE ------------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> None:
        if len(payload) > _MAX_COMMAND_BYTES:
            self.bad_commands += 1
            return
        if topic == self.ncmd_topic:
            try:
                p = Payload.FromString(payload)
            except Exception:
                self.bad_commands += 1
                log.warning("sparkplug: undecodable NCMD (%d bytes) ignored", len(payload))
                return
            for m in p.metrics:
                if m.name == REBIRTH and m.WhichOneof("value") == "boolean_value" and m.boolean_value:
                    self.request_rebirth()
                else:
                    self.bad_commands += 1
        elif topic == self.state_topic:
            self._on_state(payload)

    def request_rebirth(self) -> None:
        self.rebirth_requests += 1
        if not self.link.connected.is_set() or (self.primary and not self.host_online) or self._rebirth_timer is not None:
            return  # the birth that follows (connection, host online, timer) answers it
        wait = self.last_birth + self.cfg.rebirth_min_interval_s - time.monotonic()
        if wait > 0:
            self._rebirth_timer = asyncio.get_running_loop().call_later(wait, self._rebirth_now)
        else:
            self._rebirth_now()

    def _rebirth_now(self) -> None:
        self._rebirth_timer = None
        log.info("sparkplug: rebirth requested: publishing NBIRTH and DBIRTHs")
        self._start_birth()

    def _on_state(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
            online, ts = doc["online"], doc["timestamp"]
            if not isinstance(online, bool) or isinstance(ts, bool) or not isinstance(ts, (int, float)):
                raise ValueError("online must be a boolean and timestamp a number")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            self.bad_commands += 1
            log.warning("sparkplug: STATE of %r ignored: %s (Sparkplug 3.0 JSON expected)", self.primary, exc)
            return
        if self.host_ts is not None and ts < self.host_ts:
            return  # an older session of the host (tck-id-operational-behavior-edge-node-termination-host-offline-timestamp)
        self.host_ts = ts
        if online:
            self.host_online = True
            if self.link.connected.is_set() and not self.born and self.birthing is None:
                log.info("sparkplug: primary host %r online", self.primary)
                self._start_birth()
        else:
            self.host_online = False
            if self.born or self.birthing is not None:
                # tck-id-message-flow-edge-node-birth-publish-phid-offline: NDEATH, disconnect, start over.
                log.warning("sparkplug: primary host %r offline: NDEATH and reconnect", self.primary)
                self._end_session()
                self.link.publish(self.ndeath_topic, node_metrics.ndeath(self.bdseq), qos=0)
                self.link.drop()

    # ---- publishing --------------------------------------------------------------------------
    async def yield_to_loop(self, session: int, *, born: bool = False) -> bool:
        """Let readings in between a long birth or scan; False when ``session`` ended meanwhile
        (or, with ``born``, the node is not born any more): the caller stops."""
        await asyncio.sleep(0)
        return session == self.session and (self.born or not born)

    def send(self, mtype: str, device: str | None, p: Payload, seq: int | None = None) -> bool:
        """Give ``p`` the session's next seq and write it (QoS 0, not retained). False when the
        connection is gone (the seq is then not used)."""
        nxt = (self.seq + 1) & 0xFF if seq is None else seq
        p.seq = nxt
        if self.link.publish(schema.topic(self.group, mtype, self.node_id, device), p.SerializeToString(), qos=0) is None:
            return False
        self.seq = nxt
        self.messages += 1
        return True

    def _start_birth(self) -> None:
        if self.birthing is not None:
            self.birthing.cancel()
        self.born = False
        self.last_birth = time.monotonic()
        self.birthing = asyncio.ensure_future(self._birth(self.session))

    async def _birth(self, session: int) -> None:
        """NBIRTH then every DBIRTH, before any data (tck-id-payloads-dbirth-order)."""
        try:
            p, self.node_sent = node_metrics.nbirth(self.agent, self.bdseq)
            if not self.send("NBIRTH", None, p, seq=0):
                return
            self.born_at = time.time()
            if not await self.series_devices.birth(session):
                return
            if self.machine_devices is not None and not await self.machine_devices.birth(session):
                return
            self.born = True
            self.births += 1
            log.info("sparkplug: NBIRTH (bdSeq %d) and %d DBIRTH(s) published", self.bdseq, len(self.series_devices.declared))
        finally:
            if session == self.session and asyncio.current_task() is self.birthing:
                self.birthing = None
        self.pump()

    def _outbox_ready(self) -> None:
        self.agent.link.release_acks()
        self.pump()

    def pump(self) -> None:
        """Publish committed alarm changes, encoded now for this session."""
        while self.born and self.link.connected.is_set():
            batch = self.outbox.take(100)
            if not batch:
                return
            for i, msg in enumerate(batch):
                if not self._alarm_ddata(msg):
                    self.outbox.requeue(batch[i:])
                    return
                self.outbox.ack(msg)

    def _alarm_ddata(self, msg: OutMessage) -> bool:
        """One committed alarm change to its device (series or machine); False when the
        connection is gone (the row is then requeued)."""
        try:
            doc = json.loads(msg.payload)
            if "machine" in doc:
                return self.machine_devices.alarm_row(doc, msg) if self.machine_devices is not None else True
            sid = doc["series"]
            raised = doc["state"] == "raised"
        except (ValueError, KeyError, TypeError):
            log.error("sparkplug: unreadable outbox row %d dropped", msg.id)
            return True
        return self.series_devices.alarm_row(sid, raised, doc, msg)

    async def _periodic(self) -> None:
        """Scores, thresholds, versions, states and node figures that changed: at most every
        ``score_interval_s``; devices of new series are born again first."""
        while True:
            await asyncio.sleep(self.cfg.score_interval_s)
            if not self.born or not self.link.connected.is_set():
                continue
            try:
                await self._publish_changes(self.session)
            except Exception:
                log.exception("sparkplug: periodic publish failed")

    async def _publish_changes(self, session: int) -> None:
        ts = now_ms()
        p = node_metrics.ndata(self.agent, self.node_sent, ts)
        if len(p.metrics) and not self.send("NDATA", None, p):
            return
        deadband = self.cfg.score_deadband
        if not await self.series_devices.changes(session, ts, deadband):
            return
        if self.machine_devices is not None:
            await self.machine_devices.changes(session, deadband)
