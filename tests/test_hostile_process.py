"""Hostile-input campaign, attack class *process faults*: the agent SIGKILLed during a fit,
fits that would run for ever, parameters that would make a fit huge, and descriptor
exhaustion (issue 15, findings 6 and 11).

Each case: a real mosquitto, a real agent process, the fault, then the invariants (the
agent, or its restart, still scores and its alarm reaches SCADA).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from campaign import CANARY_SERIES
from helpers import Subscriber, wait_for


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def slow_fit(c, request_id: str, n: int = 5000, **params: int) -> bytes:
    values = [round(float(v), 3) for v in np.random.default_rng(1).normal(size=n)]
    params = {"n_estimators": 1000, "max_samples": 4096, **params}
    return c.sign("fit", {"series": CANARY_SERIES, "values": values, "detector": "isolation_forest", "params": params}, request_id=request_id)


@pytest.mark.timeout(120)
def test_no_worker_survives_a_sigkill_of_the_agent_during_a_fit(make_campaign) -> None:
    """Each SIGKILL of the agent left its fit worker and multiprocessing's resource tracker
    running (after 10 kills: 20 processes, 580 MB). Workers now die with the agent."""
    c = make_campaign(signed_commands=True)
    answers = Subscriber(c.broker, f"edge/{c.gateway_id}/cmd/+/response")
    try:
        assert c.agent.proc is not None
        agent_pid = c.agent.proc.pid
        c.plc.publish(f"edge/{c.gateway_id}/cmd/fit", slow_fit(c, "slow")).wait_for_publish(10)
        wait_for(lambda: [a for a in answers.json() if a["status"] == "accepted"], 10, "the fit accepted")
        time.sleep(1.5)  # the worker is busy fitting (sklearn import + 1,000 trees)
        assert not [a for a in answers.json() if a["status"] in ("done", "failed")], "the fit ended before the kill"
        below = descendants(agent_pid)
        assert len(below) >= 2, f"expected a fit worker and a resource tracker, found {below}"
        c.agent.kill()
        wait_for(lambda: not [p for p in below if alive(p)], 10, f"the agent's workers {below} to exit")
    finally:
        answers.close()
    c.agent.start()
    c.agent.wait_connected()
    c.assert_invariants()


def fit_workers(agent_pid: int) -> set[int]:
    out = set()
    for pid in descendants(agent_pid):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.add(pid)
        except OSError:
            pass
    return out


@pytest.mark.timeout(120)
def test_a_fit_longer_than_the_timeout_fails_and_its_worker_is_replaced(make_campaign) -> None:
    """A fit with no end (here: longer than detector.fit_timeout_s=1) held the one fit
    worker, and every other series' first fit waited behind it. It is now reported failed,
    its worker killed and replaced, and the next fit runs."""
    c = make_campaign(signed_commands=True, **{"detector.fit_timeout_s": 1.0})
    answers = Subscriber(c.broker, f"edge/{c.gateway_id}/cmd/+/response")
    try:
        assert c.agent.proc is not None
        old = fit_workers(c.agent.proc.pid)
        assert len(old) == 1
        c.plc.publish(f"edge/{c.gateway_id}/cmd/fit", slow_fit(c, "slow")).wait_for_publish(10)
        failed = wait_for(lambda: [a for a in answers.json() if a["request_id"] == "slow" and a["status"] == "failed"], 20, "the slow fit failed")
        assert "fit_timeout_s" in failed[0]["error"]
        wait_for(lambda: not [p for p in old if alive(p)], 10, "the old worker gone")
        c.plc.publish(f"edge/{c.gateway_id}/cmd/fit", c.sign("fit", {"series": CANARY_SERIES, "last_n": 100}, request_id="next")).wait_for_publish(10)
        done = wait_for(lambda: [a for a in answers.json() if a["request_id"] == "next" and a["status"] in ("done", "failed")], 40, "the next fit")
        assert done[0]["status"] == "done", done
        assert fit_workers(c.agent.proc.pid).isdisjoint(old)
        assert "took longer than detector.fit_timeout_s" in c.agent.log()
    finally:
        answers.close()
    c.assert_invariants()


@pytest.mark.timeout(120)
def test_fit_parameters_beyond_their_bounds_are_refused_on_commands_and_http(make_campaign) -> None:
    """n_estimators=20000 took 23 s and a 612 MB worker while every other fit waited. Such
    parameters are refused where they enter, naming the parameter and its bounds."""
    c = make_campaign(signed_commands=True, http=True)
    answers = Subscriber(c.broker, f"edge/{c.gateway_id}/cmd/+/response")
    try:
        huge = {"series": CANARY_SERIES, "last_n": 100, "detector": "isolation_forest", "params": {"n_estimators": 20_000}}
        t0 = time.monotonic()
        c.plc.publish(f"edge/{c.gateway_id}/cmd/fit", c.sign("fit", huge, request_id="huge")).wait_for_publish(10)
        failed = wait_for(lambda: [a for a in answers.json() if a["request_id"] == "huge" and a["status"] == "failed"], 10, "refused")
        assert "n_estimators=20000 is outside its bounds [1, 1000]" in failed[0]["error"]
        assert time.monotonic() - t0 < 5
        status, body = c.post(f"/fit/{CANARY_SERIES}", {"last_n": 100, "detector": "isolation_forest", "params": {"max_samples": 100_000}})
        assert status == 400 and "max_samples=100000 is outside its bounds" in body["detail"], body
    finally:
        answers.close()
    c.assert_invariants()


def limit_descriptors(n: int):  # type: ignore[no-untyped-def]
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


def broker_reconnects(c) -> int:
    return c.agent.log().count("connected to ")


@pytest.mark.timeout(180)
def test_idle_http_connections_cannot_exhaust_descriptors(make_campaign) -> None:
    """Issue 15 finding 6: half-open HTTP requests were never timed out; ~1,000 of them took
    every descriptor (the agent here runs with 256, as a small systemd LimitNOFILE would
    give it), the agent could not reconnect to a restarted broker, and asyncio logged
    ~14,000 tracebacks a second. Now: a connection cap below the descriptor limit, header and
    body read timeouts, and accept errors logged at a rate limit."""
    import socket

    c = make_campaign(http=True, agent_preexec=limit_descriptors(256))
    socks: list[socket.socket] = []
    try:
        for _ in range(1000):
            try:
                s = socket.create_connection(("127.0.0.1", c.http_port), timeout=2)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")  # never finished
            except OSError:
                continue
            socks.append(s)
        time.sleep(1.0)
        log_before = len(c.agent.log())
        connects = broker_reconnects(c)
        c.restart_broker()
        wait_for(lambda: broker_reconnects(c) > connects, 20, f"the agent to reconnect\n{c.agent.log()[-2000:]}")
        c.assert_invariants(timeout=10.0)
        grown = len(c.agent.log()) - log_before
        assert grown < 30_000, c.agent.log()[log_before:log_before + 3000]
    finally:
        for s in socks:
            s.close()

    def healthz() -> bool:
        try:
            return c.get("/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    wait_for(healthz, 15, "the HTTP port to serve again once the attacker's sockets are gone")
    _, health = c.get("/healthcheck")
    # The cap turned most of them away; whether some were also timed out depends on how long
    # the steps above took (test_hostile_http.py checks the timeouts on their own).
    assert health["http"]["connections_refused"] > 0
