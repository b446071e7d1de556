"""The HTTP port inside a real agent process: it starts with the agent, stops with SIGTERM,
and a port that cannot be bound costs the dashboard, never the alarms.

Also the shared helpers of the HTTP tests (``HttpAgent``, ``train``, ``raise_alarm``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from helpers import AgentProcess, Mosquitto, Publisher, agent_config, free_port, wait_for

TOKEN = "t0ken-for-tests"
MIN_TRAIN = 20


class HttpAgent(AgentProcess):
    """A real agent process with its HTTP port on a free loopback port, and an HTTP client for it."""

    def __init__(self, tmp: Path, broker: Mosquitto, token: str | None = TOKEN, name: str = "agent", **overrides: Any) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        http: dict[str, Any] = {"enabled": True, "port": self.port}
        if token is not None:
            (tmp / "api-token").write_text(token + "\n")
            http["token_file"] = str(tmp / "api-token")
        http.update(overrides.pop("http", {}))
        cfg = agent_config(tmp, broker, http=http, **{"detector.min_train_samples": MIN_TRAIN, **overrides})
        super().__init__(tmp, cfg, name=name)
        self.base = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.base, timeout=10.0)

    def start(self) -> HttpAgent:
        super().start()
        self.wait_log("HTTP port listening", 20)
        return self

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, **kw)

    def series(self, sid: str) -> dict[str, Any] | None:
        r = self.get("/series/" + quote(sid, safe=""))
        return r.json() if r.status_code == 200 else None

    def close(self) -> int:
        self.client.close()
        return self.stop()


def topic(sid: str) -> str:
    """Series ids are ``{machine}/{sensor}`` of ``plant/{line}/{machine}/{sensor}``."""
    return f"plant/line1/{sid}"


def train(agent: HttpAgent, pub: Publisher, sids: list[str], n: int = MIN_TRAIN + 10, seed: int = 7) -> None:
    """Publish ``n`` normal readings (20 +- 1) per series and wait until every one has a model.

    Bounded noise: the readings after the first MIN_TRAIN are scored too (they arrive while the
    first model is fitted and are scored when it lands), and must raise no alarm of their own."""
    rng = np.random.default_rng(seed)
    now = time.time()
    last = None
    for i in range(n):
        for sid in sids:
            last = pub.reading(topic(sid), float(20 + rng.uniform(-1.0, 1.0)), now - n + i)
    assert last is not None
    last.wait_for_publish(10)
    for sid in sids:
        wait_for(lambda sid=sid: (agent.series(sid) or {}).get("model"), 15, f"a model for {sid!r}")


def raise_alarm(agent: HttpAgent, pub: Publisher, sid: str, value: float = 1000.0) -> dict[str, Any]:
    pub.reading(topic(sid), value, time.time()).wait_for_publish(10)
    return wait_for(lambda: (d := agent.series(sid)) and d["state"] == "alarm" and d, 10, f"{sid!r} in alarm")


# ---- tests -----------------------------------------------------------------------------------


@contextmanager
def running(
    tmp_path_factory: pytest.TempPathFactory,
    series: list[str],
    alarm: tuple[str, float] | None = None,
    broker: Mosquitto | None = None,
    **overrides: Any,
) -> Iterator[tuple[HttpAgent, Publisher]]:
    """A broker (unless given), an HTTP-enabled agent with ``series`` trained and optionally
    one of them in alarm, and a publisher; everything is stopped afterwards."""
    own = broker is None
    if broker is None:
        broker = Mosquitto(tmp_path_factory.mktemp("broker")).start()
    agent = HttpAgent(tmp_path_factory.mktemp("agent"), broker, **overrides).start()
    pub = Publisher(broker)
    try:
        agent.wait_connected()
        train(agent, pub, series)
        if alarm is not None:
            raise_alarm(agent, pub, alarm[0], value=alarm[1])
        yield agent, pub
    finally:
        pub.close()
        code = agent.close()
        if own:
            broker.stop()
        assert code == 0, agent.log()[-3000:]


def test_http_port_starts_with_the_agent_and_sigterm_stops_both(tmp_path: Path, mosquitto: Mosquitto) -> None:
    agent = HttpAgent(tmp_path, mosquitto).start()
    try:
        assert agent.get("/healthz").json()["status"] == "alive"
    finally:
        rc = agent.close()
    assert rc == 0, agent.log()[-2000:]
    log = agent.log()
    assert "stopped" in log and "Traceback" not in log, log[-2000:]
    # The agent, not uvicorn, handled SIGTERM (it flushed its outbox) and the port is free again.
    assert "shutting down: flushing outbox" in log
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", agent.port))


def test_port_in_use_costs_the_dashboard_not_the_alarms(tmp_path: Path, mosquitto: Mosquitto) -> None:
    agent = HttpAgent(tmp_path, mosquitto)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", agent.port))
        squatter.listen()
        AgentProcess.start(agent)
        try:
            agent.wait_log("HTTP port disabled", 20)
            agent.wait_connected()
            pub = Publisher(mosquitto)
            try:
                for i in range(MIN_TRAIN + 1):
                    pub.reading(topic("M9/temp"), 20.0 + (i % 3), time.time()).wait_for_publish(10)
                agent.wait_log("model v1 (statistical) active", 15)
            finally:
                pub.close()
            assert agent.proc is not None and agent.proc.poll() is None
        finally:
            rc = agent.close()
    assert rc == 0, agent.log()[-2000:]
