"""The hostile-input campaign's harness: a real broker, a real agent process, an independent
SCADA subscriber and PLC publisher, and the two invariants every attack must leave standing.

1. **The agent keeps scoring.** A canary series, trained when the campaign starts, is spiked
   after the attack: its alarm can only exist if the reading was scored.
2. **Every alarm it should raise reaches an independent subscriber.** The canary's alarm (and
   any the test expects) must arrive at a paho client on the alarm topics, within a bound.

Each ``test_hostile_*.py`` module holds one attack class (topics, payloads, sizes, clocks,
commands, HTTP, model files, resources, process faults); each case builds a ``Campaign``,
attacks, then calls ``assert_invariants()``. Every wait has a deadline.

    def test_something(make_campaign):
        c = make_campaign(**{"ingest.replay_window_s": 60})   # agent_config overrides
        ...attack through c.plc / mosquitto_pub / HTTP...
        c.assert_invariants()

Options beyond the overrides: ``broker_extra`` (mosquitto config lines), ``http=True`` (the
agent's HTTP port on a free loopback port with a bearer token, ``c.get``/``c.post``/``c.request``),
``signed_commands=True`` (a command key, ``c.sign``), ``agent_preexec`` (run in the agent's
child process before exec, e.g. to lower its file-descriptor limit).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from helpers import (
    AgentProcess,
    Mosquitto,
    Publisher,
    Subscriber,
    agent_config,
    free_port,
    wait_for,
)

CANARY_TOPIC = "plant/canary/c0/probe"
CANARY_SERIES = "c0/probe"
MIN_TRAIN = 100  # agent_config's detector.min_train_samples (statistical detector)
SPIKE = 25.0  # uniform(-1, 1) noise has sigma 0.58: 25 scores ~43 sigma, far past k=3
COMMAND_KEY = b"campaign-command-key-0123456789abcdef"
HTTP_TOKEN = "campaign-http-token-0123456789"


class Campaign:
    """One broker, one agent, one SCADA subscriber on ``edge/{gw}/alerts/#``, one PLC publisher.

    ``overrides`` are dotted ``agent_config`` keys. ``broker_extra`` is appended to the
    mosquitto config (e.g. ``"max_packet_size 16384\\n"``).
    """

    def __init__(
        self,
        tmp: Path,
        broker_extra: str = "",
        start_agent: bool = True,
        *,
        http: bool = False,
        signed_commands: bool = False,
        agent_preexec: Callable[[], None] | None = None,
        **overrides: Any,
    ) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(tmp / "broker", extra=broker_extra).start()
        self.http_port: int | None = None
        if http:
            self.http_port = free_port()
            (tmp / "http.token").write_text(HTTP_TOKEN + "\n")
            overrides = {"http.enabled": True, "http.port": self.http_port, "http.token_file": str(tmp / "http.token"), **overrides}
        if signed_commands:
            (tmp / "cmd.key").write_bytes(COMMAND_KEY + b"\n")
            overrides = {"commands.key_file": str(tmp / "cmd.key"), **overrides}
        if overrides.get("http.enabled") and "http.port" not in overrides:
            overrides["http.port"] = free_port()
        self.config = agent_config(tmp, self.broker, **overrides)
        self.gateway_id = self.config["gateway_id"]
        self.agent = AgentProcess(tmp, self.config, preexec_fn=agent_preexec)
        self.scada = Subscriber(self.broker, f"edge/{self.gateway_id}/alerts/#")
        self.plc = Publisher(self.broker)
        self.rng = np.random.default_rng(7)
        # Readings are stamped from an hour ago, one second apart per series, so that no test
        # trips the replay/stale rules by accident. ``next_ts`` hands out the next stamp.
        self._ts: dict[str, float] = {}
        self._t0 = time.time() - 3600
        if start_agent:
            try:
                self.start()
            except BaseException:
                # The factory never gets the object to close it: stop what was started here,
                # or a failed start leaves an agent and a broker running after the test.
                self.close()
                raise

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.agent.start()
        self.agent.wait_connected()
        if self.http_port is not None:
            wait_for(lambda: "HTTP port listening" in self.agent.log(), 20, "the HTTP port")
        self.train(CANARY_TOPIC)

    def restart_broker(self, down_s: float = 1.0) -> None:
        """Stop the broker (SIGTERM: it saves its state), start it again on the same port, and
        wait until the campaign's PLC and SCADA clients are back (SCADA subscribed again)."""
        self.scada.subscribed.clear()
        self.broker.stop()
        time.sleep(down_s)
        self.broker.start()
        wait_for(lambda: self.plc.client.is_connected() and self.scada.subscribed.is_set(), 30, "PLC and SCADA back on the broker")

    # ---- commands and HTTP -----------------------------------------------------------------
    def sign(self, command: str, args: dict[str, Any] | None = None, **kw: Any) -> bytes:
        """A command signed with the campaign's key (``signed_commands=True``)."""
        from edge_agent.command_auth import sign

        return sign(COMMAND_KEY, command, args or {}, **kw)

    def request(self, method: str, path: str, body: Any = None, token: str | None = HTTP_TOKEN, timeout: float = 10.0) -> tuple[int, Any]:
        """One request to the agent's HTTP port: (status, parsed JSON or raw bytes)."""
        assert self.http_port is not None, "make_campaign(http=True)"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return self.request("POST", path, body, **kw)

    def close(self) -> None:
        for part in (self.plc, self.scada):
            try:
                part.close()
            except Exception:
                pass
        if self.agent.proc is not None:
            try:
                self.agent.stop()
            except Exception:
                self.agent.kill()
        self.broker.stop()

    # ---- readings -------------------------------------------------------------------------
    def next_ts(self, topic: str) -> float:
        ts = self._ts.get(topic, self._t0) + 1.0
        self._ts[topic] = ts
        return ts

    def publish(self, topic: str, value: float, ts: float | None = None) -> None:
        self.plc.reading(topic, value, self.next_ts(topic) if ts is None else ts).wait_for_publish(10)

    def train(self, topic: str, n: int = MIN_TRAIN, timeout: float = 30.0) -> None:
        """Publish ``n`` noise readings and wait until the agent says a model is active."""
        before = self.agent.models_active()
        infos = [self.plc.reading(topic, float(self.rng.uniform(-1, 1)), self.next_ts(topic)) for _ in range(n)]
        for info in infos:
            info.wait_for_publish(10)
        wait_for(lambda: self.agent.models_active() > before, timeout, f"a model for {topic}")

    def alarms(self, series: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.scada.json() if (series is None or a.get("series") == series) and (state is None or a.get("state") == state)]

    def spike(self, topic: str, series: str, timeout: float = 10.0, value: float = SPIKE) -> dict[str, Any]:
        """Publish one spike and return the ``raised`` alarm it produced, as SCADA received it.
        ``self.last_latency`` is then the time from handing the spike to the PLC's client to
        SCADA's client receiving the alarm."""
        before = len(self.alarms(series, "raised"))
        t0 = time.monotonic()
        self.publish(topic, value)
        wait_for(lambda: len(self.alarms(series, "raised")) > before, timeout, f"a raised alarm for {series} at SCADA")
        with self.scada.lock:
            raised = [(at, json.loads(p)) for (t, p, _), at in zip(self.scada.messages, self.scada.received_at, strict=True)]
        at, alarm = [(at, a) for at, a in raised if a.get("series") == series and a.get("state") == "raised"][before]
        self.last_latency = at - t0
        return alarm

    def calm(self, topic: str, n: int = 12) -> None:
        """Normal readings after a spike, so its alarm clears (clear_after defaults to 10)."""
        for _ in range(n):
            self.publish(topic, float(self.rng.uniform(-1, 1)))

    # ---- the invariants ----------------------------------------------------------------------
    def assert_invariants(self, timeout: float = 10.0) -> dict[str, Any]:
        """The agent process is alive, still scores, and its alarm reaches SCADA in ``timeout``."""
        assert self.agent.proc is not None and self.agent.proc.poll() is None, f"agent exited\n{self.agent.log()[-3000:]}"
        # An alarm still raised from an earlier check would hide the next spike: calm it first.
        if len(self.alarms(CANARY_SERIES, "raised")) > len(self.alarms(CANARY_SERIES, "cleared")):
            self.calm(CANARY_TOPIC)
        alarm = self.spike(CANARY_TOPIC, CANARY_SERIES, timeout=timeout)
        assert alarm["value"] == SPIKE
        self.assert_strict_json()
        return alarm

    def assert_strict_json(self) -> None:
        """Every alarm SCADA received parses as strict JSON (no NaN or Infinity: JavaScript and
        orjson refuse them, though Python's json takes them)."""
        with self.scada.lock:
            payloads = [p for _, p, _ in self.scada.messages]
        for p in payloads:
            strict_loads(p)


    # ---- helpers for the attack classes (harden-data) ---------------------------------------
    def http(self, path: str, timeout: float = 5.0) -> bytes:
        """GET from the agent's HTTP port (make the campaign with ``**{"http.enabled": True}``);
        waits for the port to listen (it opens a moment after the broker connection)."""
        port = self.config["http"]["port"]
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
                    return r.read()
            except urllib.error.URLError as exc:
                if not isinstance(exc.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def restart(self, kill: bool = False) -> None:
        """Stop the agent (SIGTERM, or SIGKILL with ``kill``), start it again on the same state,
        and wait for its new broker connection (its log keeps the old run's lines)."""
        connected = self.agent.log().count("connected to")
        self.agent.kill() if kill else self.agent.stop()
        self.agent.start()
        wait_for(lambda: self.agent.log().count("connected to") > connected, 20, "the restarted agent connected")

    def healthcheck(self) -> dict[str, Any]:
        return json.loads(self.http("/healthcheck"))

    def metrics(self) -> dict[str, float]:
        """``/metrics`` samples as ``{'name{labels}': value}`` (``name`` alone without labels)."""
        out = {}
        for line in self.http("/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def flood(self, messages: list[tuple[str, bytes]], qos: int = 0, timeout: float = 60.0) -> None:
        """Publish many messages as fast as a second paho client can, and wait until sent."""
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"flood-{free_port()}")
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(1000)
        dropped: list[Any] = []
        client.on_disconnect = lambda c, u, flags, rc, props=None: dropped.append(rc)
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        try:
            infos = [client.publish(t, p, qos=qos) for t, p in messages]
            deadline = time.monotonic() + timeout
            for info in infos[-200:]:
                while not info.is_published():
                    assert not dropped, f"the broker dropped the flood client ({dropped[0]}): it refused a topic or payload"
                    assert time.monotonic() < deadline, "flood not sent in time"
                    time.sleep(0.01)
        finally:
            client.loop_stop()
            client.disconnect()

    def wait_received(self, n: int, timeout: float = 60.0) -> None:
        """Until the agent counts ``n`` messages received on its reading subscriptions (HTTP)."""
        wait_for(lambda: self.metrics().get("edge_agent_messages_received_total", 0) >= n, timeout,
                 f"{n} messages received by the agent", interval=0.2)


def _no_constants(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def strict_loads(payload: bytes) -> Any:
    return json.loads(payload, parse_constant=_no_constants)
