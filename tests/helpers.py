"""Real processes for tests: a mosquitto broker, the agent itself, and a SCADA-side subscriber.

Everything binds to loopback on free ports, and every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Mosquitto:
    """A real mosquitto on a free loopback port, with persistence in its own directory."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = "") -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 200000\n"
            "max_inflight_messages 0\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            # Started as root (CI), mosquitto drops to user "mosquitto", which cannot write its
            # persistence file in pytest's root-owned temp dir: every autosave fails and a
            # SIGKILLed broker comes back without its sessions. Stay root instead.
            + ("user root\n" if os.geteuid() == 0 else "")
            + extra
        )
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "mosquitto.log"

    def start(self) -> Mosquitto:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def wait_saved(self, since: float, timeout: float = 10.0) -> None:
        """Wait for an autosave of the persistence file after ``since`` (epoch seconds). The
        first comes 1-2 s after start: a broker SIGKILLed before it returns with no sessions."""
        db = self.dir / "mosquitto.db"

        def saved() -> bool:
            try:
                return db.stat().st_mtime > since
            except OSError:
                return False

        wait_for(saved, timeout, f"mosquitto to save its state to {db}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def agent_config(tmp: Path, broker: Mosquitto, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "gateway_id": "gw-test",
        "state_dir": str(tmp / "state"),
        "log": {"level": "INFO"},
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect": {"initial_delay_s": 0.2, "max_delay_s": 1.0}},
        "detector": {"name": "statistical", "min_train_samples": 100},
        "http": {"enabled": False},
    }
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


class AgentProcess:
    """``python -m edge_agent run -c <config>`` as a child process, its log in a file."""

    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any],
        name: str = "agent",
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.tmp = tmp
        self.preexec_fn = preexec_fn
        self.config = config
        self.cfg_path = tmp / f"{name}.yaml"
        self.cfg_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp / f"{name}.log"
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self._log_from = 0

    def start(self) -> AgentProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        # wait_log looks at this run's lines only: the file keeps those of earlier runs, and a
        # "connected to" of the last run made wait_connected return before this one had even
        # set its signal handlers (a SIGTERM then killed it: stop() returned -15).
        self._log_from = len(self.log())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "-c", str(self.cfg_path)],
                stdout=log, stderr=log, env=env, cwd=REPO, preexec_fn=self.preexec_fn,
            )
        return self

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        """Until ``text`` is in the log of the current run (since the last start())."""
        wait_for(lambda: text in self.log()[self._log_from:], timeout, f"{text!r} in the agent log\n{self.log()[-3000:]}")

    def wait_connected(self, timeout: float = 20.0) -> None:
        self.wait_log("connected to", timeout)

    def models_active(self) -> int:
        """Models the agent has put to use, as its log says. A model's file appears on disk a
        moment before: a reading arriving in between still counts as learning, not scored."""
        return self.log().count(" active after ")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    @property
    def state_dir(self) -> Path:
        return Path(self.config["state_dir"])


class Subscriber:
    """The SCADA side: an independent paho client collecting messages on a topic filter."""

    def __init__(self, broker: Mosquitto, topic: str, client_id: str | None = None, qos: int = 1, clean: bool = True) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.received_at: list[float] = []  # time.monotonic() of each message, in order
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"scada-{free_port()}", clean_session=clean)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=qos)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("subscriber did not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
            self.received_at.append(time.monotonic())

    def json(self, prefix: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.startswith(prefix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Publisher:
    """The PLC side: a paho client publishing QoS 1 readings and waiting for their PUBACKs."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"plc-{free_port()}")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> Any:
        return self.client.publish(topic, payload, qos=qos)

    def reading(self, topic: str, value: float, ts: float, qos: int = 1) -> Any:
        return self.publish(topic, json.dumps({"value": value, "ts": ts}), qos)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def robust_alarm_events(values: Any, dt: float = 60.0, t0: float = 1.7e9, **alarm_cfg: Any) -> list[tuple[int, str, str | None, str]]:
    """Stream ``values`` through a Pipeline with the default ``robust`` detector (the first 500
    readings train, no acceptance time unless given); (index, state, kind, message) per alarm event."""
    from edge_agent.config import AgentConfig
    from edge_agent.pipeline import InlineTrainer, Pipeline

    cfg = AgentConfig.model_validate({"detector": {"name": "robust"}, "alarms": {"accept_after_s": None, **alarm_cfg}})
    events: list = []
    pipe = Pipeline(cfg, InlineTrainer(), events.append)
    out = []
    for i, v in enumerate(values.tolist()):
        n = len(events)
        pipe.process("s", v, t0 + i * dt)
        out += [(i, e.state, e.kind, e.message) for e in events[n:]]
    return out


def robust_with_operator(values: Any, accept_after: int | None, dt: float = 60.0, t0: float = 1.7e9,
                         alarms: dict[str, Any] | None = None) -> tuple[list[tuple[int, str, str | None]], Any]:
    """Stream ``values`` through a Pipeline with the default ``robust`` detector (no acceptance
    time); with ``accept_after``, an operator accepts each alarm by ``rebaseline`` that many
    readings after its raise. (index, state, kind) per alarm event, and the pipeline."""
    from edge_agent import alarm_decision
    from edge_agent.config import AgentConfig
    from edge_agent.pipeline import InlineTrainer, Pipeline

    cfg = AgentConfig.model_validate({"detector": {"name": "robust"}, "alarms": {"accept_after_s": None, **(alarms or {})}})
    events: list = []
    pipe = Pipeline(cfg, InlineTrainer(), events.append)
    out: list[tuple[int, str, str | None]] = []
    raised_at = -1
    for i, v in enumerate(values.tolist()):
        n = len(events)
        pipe.process("s", v, t0 + dt * i)
        for e in events[n:]:
            raised_at = i if e.state == "raised" else -1
        if accept_after is not None and raised_at >= 0 and i - raised_at == accept_after:
            alarm_decision.rebaseline(pipe, "s", by="the operator")
            raised_at = -1
        out += [(i, e.state, e.kind) for e in events[n:]]
    return out, pipe
