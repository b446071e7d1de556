"""systemd notify protocol: the module against a real unix datagram socket, then the real agent.

The "systemd" here is a unix datagram socket the test binds (a path in tmp_path, or an
abstract ``@name``); a thread records every datagram with its arrival time.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from edge_agent.notify import Notifier, watchdog_loop

try:  # works whether or not tests/ is a package
    from tests.tls_broker import (
        AgentProcess,
        MosquittoBroker,
        have_mosquitto,
        wait_until,
        write_config,
    )
except ImportError:
    from tls_broker import AgentProcess, MosquittoBroker, have_mosquitto, wait_until, write_config


class FakeSystemd:
    """Binds NOTIFY_SOCKET and collects ``(monotonic_time, message)`` pairs."""

    def __init__(self, address: str):
        self.env_value = address  # what goes into $NOTIFY_SOCKET
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def assignments(self) -> list[tuple[float, str]]:
        """Every KEY=VALUE line received, with the time its datagram arrived."""
        with self._lock:
            return [(t, line) for t, msg in self.messages for line in msg.split("\n") if line]

    def times(self, line: str) -> list[float]:
        return [t for t, a in self.assignments() if a == line]

    def wait_for(self, line: str, timeout: float, count: int = 1, agent: AgentProcess | None = None) -> list[float]:
        """Arrival times once ``line`` was received ``count`` times; fails early if ``agent`` died."""

        def seen() -> list[float] | None:
            ts = self.times(line)
            if len(ts) >= count:
                return ts
            if agent is not None and not agent.alive():
                raise AssertionError(f"agent exited ({agent.proc.returncode}) before {count} x {line!r}:\n{agent.tail()}")
            return None

        try:
            return wait_until(seen, timeout, what=f"{count} x {line!r} on NOTIFY_SOCKET")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; received: {self.assignments()[-10:]}") from None


@pytest.fixture
def fake_systemd(tmp_path):
    fs = FakeSystemd(str(tmp_path / "notify.sock"))
    yield fs
    fs.close()


@pytest.fixture
def abstract_systemd():
    fs = FakeSystemd(f"@edge-agent-test-{uuid.uuid4().hex}")
    yield fs
    fs.close()


def test_ready_status_stopping_reach_the_socket(fake_systemd):
    n = Notifier.from_env({"NOTIFY_SOCKET": fake_systemd.env_value})
    assert n.enabled
    assert n.ready("started: 3 series\nsecond line")
    assert n.status("connected")
    assert n.stopping("shutting down")
    fake_systemd.wait_for("STOPPING=1", 5)
    got = [a for _, a in fake_systemd.assignments()]
    # One-line STATUS: systemctl shows a single line, so newlines are folded.
    assert got == ["READY=1", "STATUS=started: 3 series second line", "STATUS=connected",
                   "STOPPING=1", "STATUS=shutting down"]
    n.close()


def test_abstract_socket_name(abstract_systemd):
    n = Notifier.from_env({"NOTIFY_SOCKET": abstract_systemd.env_value})
    assert n.ready()
    abstract_systemd.wait_for("READY=1", 5)
    n.close()


def test_no_notify_socket_is_a_noop():
    n = Notifier.from_env({"WATCHDOG_USEC": "100000"})
    assert not n.enabled
    assert n.watchdog_interval_s is None
    assert (n.ready("x"), n.status("x"), n.watchdog(), n.stopping()) == (False, False, False, False)
    # watchdog_loop returns at once rather than spinning.
    asyncio.run(asyncio.wait_for(watchdog_loop(n, lambda: "x"), timeout=5))


def test_send_failure_is_reported_not_raised(tmp_path, caplog):
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert n.enabled
    assert n.ready() is False
    assert "systemd notify" in caplog.text


def test_watchdog_env_parsing():
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_interval_s == 15.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 15.0
    # A watchdog meant for another process (e.g. our parent) is not ours to feed.
    other = Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval_s is None and other.watchdog() is False
    assert Notifier.from_env({**env, "WATCHDOG_USEC": "0"}).watchdog_interval_s is None
    assert Notifier.from_env({**env, "WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_watchdog_loop_pings_at_half_interval_with_status(fake_systemd):
    n = Notifier.from_env({"NOTIFY_SOCKET": fake_systemd.env_value, "WATCHDOG_USEC": "200000",
                           "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_interval_s == pytest.approx(0.1)
    calls = []

    def status() -> str:
        calls.append(1)
        return f"ok, {len(calls)} checks"

    async def main() -> None:
        task = asyncio.create_task(watchdog_loop(n, status))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    pings = fake_systemd.wait_for("WATCHDOG=1", 5, count=4)
    # 1 s at a 0.1 s cadence is ~10 pings; far fewer means the cadence is wrong, far more a busy loop.
    assert 4 <= len(pings) <= 15, len(pings)
    statuses = [a for _, a in fake_systemd.assignments() if a.startswith("STATUS=")]
    assert statuses[0] == "STATUS=ok, 1 checks" and len(statuses) == len(pings)


def test_watchdog_loop_survives_a_failing_status_fn(fake_systemd):
    n = Notifier.from_env({"NOTIFY_SOCKET": fake_systemd.env_value, "WATCHDOG_USEC": "100000"})

    def broken() -> str:
        raise RuntimeError("boom")

    async def main() -> None:
        task = asyncio.create_task(watchdog_loop(n, broken))
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(main())
    fake_systemd.wait_for("WATCHDOG=1", 5, count=2)


def test_a_stalled_event_loop_stops_the_pings(fake_systemd):
    """The point of pinging from the loop: a blocked loop must starve the watchdog."""
    n = Notifier.from_env({"NOTIFY_SOCKET": fake_systemd.env_value, "WATCHDOG_USEC": "100000"})
    window: list[float] = []

    async def main() -> None:
        task = asyncio.create_task(watchdog_loop(n))
        await asyncio.sleep(0.5)
        window.append(time.monotonic())
        time.sleep(1.5)  # a blocking call on the loop thread
        window.append(time.monotonic())
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(main())
    pings = fake_systemd.wait_for("WATCHDOG=1", 5, count=4)
    start, end = window
    # Allow a ping sent just before the stall to arrive a little late; none may arrive inside it.
    inside = [t for t in pings if start + 0.2 < t < end - 0.05]
    assert inside == [], f"pings arrived while the loop was blocked: {inside}"
    assert any(t >= end for t in pings), "pings did not resume after the stall"


def test_status_refresh_without_watchdog(fake_systemd):
    n = Notifier.from_env({"NOTIFY_SOCKET": fake_systemd.env_value})

    async def main() -> None:
        task = asyncio.create_task(watchdog_loop(n, lambda: "idle", status_interval_s=0.05))
        await asyncio.sleep(0.4)
        task.cancel()

    asyncio.run(main())
    fake_systemd.wait_for("STATUS=idle", 5, count=2)
    assert fake_systemd.times("WATCHDOG=1") == []


# --------------------------------------------------------------------------- the real agent


@pytest.fixture
def broker(request, tmp_path):
    """The lead's ``mosquitto`` fixture from conftest.py if it exists, else our own plain broker."""
    try:
        yield request.getfixturevalue("mosquitto")
        return
    except pytest.FixtureLookupError:
        pass
    if not have_mosquitto():
        pytest.skip("mosquitto is not installed")
    b = MosquittoBroker.plain(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


def test_real_agent_notifies_ready_watchdog_and_stopping(broker, fake_systemd, tmp_path: Path):
    cfg = write_config(tmp_path / "agent.yaml", {
        "gateway_id": "gw-notify",
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": broker.host, "port": broker.port},
        "http": {"enabled": False},
        "detector": {"name": "statistical"},
    })
    agent = AgentProcess(cfg, tmp_path / "agent.log", {
        "NOTIFY_SOCKET": fake_systemd.env_value,
        "WATCHDOG_USEC": "1000000",  # 1 s timeout -> a ping every 0.5 s
    }).start()
    try:
        ready = fake_systemd.wait_for("READY=1", 60, agent=agent)[0]
        pings = fake_systemd.wait_for("WATCHDOG=1", 20, count=4, agent=agent)
        assert sum(t > ready for t in pings) >= 3, "WATCHDOG=1 did not repeat after READY=1"
        assert agent.alive()
        code = agent.terminate(timeout=30)
        stop = fake_systemd.wait_for("STOPPING=1", 5)[0]
        assert stop > ready
        assert code == 0, f"agent exit code {code} after SIGTERM:\n{agent.tail()}"
    finally:
        agent.kill()
