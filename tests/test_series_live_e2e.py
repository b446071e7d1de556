"""A restart must not turn a trending series into an alarm (issue 13), end to end: a PLC-side
paho client publishes a steady trend to a real agent (``robust``); it trains on 500 readings and
scores 1,000 more, the trend by then well past its fit window. The agent is stopped (SIGTERM),
or killed (SIGKILL) after a periodic write of its series' live state, and started again; the
trend goes on: no alarm, because each series scores on from where its detector was, not from its
fit-end state (which, restarted there, scores every one of the next readings anomalous). A real
fault afterwards is still raised."""

from __future__ import annotations

import random
import re
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import (
    AgentProcess,
    Mosquitto,
    Publisher,
    Subscriber,
    agent_config,
    free_port,
    wait_for,
)

N_FIT, N_BEFORE, N_AFTER = 500, 1500, 500
SLOPE = 0.01  # per reading, noise sd 1: restarted from its fit state, 1000 of the next 1000 readings anomalous
T0 = time.time() - 60.0 * (N_BEFORE + N_AFTER + 100)  # one reading a minute, all in the recent past
TOPIC = "plant/l1/m1/temp"


def trend(seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [50.0 + SLOPE * i + rng.gauss(0.0, 1.0) for i in range(N_BEFORE + N_AFTER + 20)]


def publish(pub: Publisher, values: list[float], start: int, stop: int, offset: float = 0.0) -> None:
    infos = [pub.reading(TOPIC, values[i] + offset, T0 + 60.0 * i) for i in range(start, stop)]
    for info in infos:
        info.wait_for_publish(60)


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        m = re.search(rf"^{re.escape(name)} (\S+)$", r.read().decode(), re.M)
    return float(m[1]) if m else 0.0


def scored(port: int) -> int:
    return int(metric(port, "edge_agent_readings_scored_total"))


def start(agent: AgentProcess) -> AgentProcess:
    agent.start()
    agent.wait_connected()
    return agent


class Trending(NamedTuple):
    agent: AgentProcess
    port: int
    values: list[float]
    alarms: Subscriber
    pub: Publisher


def trending(tmp_path: Path, mosquitto: Mosquitto, series: dict[str, float]) -> Trending:
    """A real agent (``robust``, with ``series`` settings) that has fitted the trend on N_FIT
    readings and scored it on to N_BEFORE without an alarm."""
    port = free_port()
    cfg = agent_config(tmp_path, mosquitto, **{
        "detector": {"name": "robust", "min_train_samples": N_FIT},
        "series": series,
        "ingest": {"max_past_age_s": 1e7},
        "http": {"enabled": True, "port": port},
    })
    t = Trending(AgentProcess(tmp_path, cfg), port, trend(), Subscriber(mosquitto, "edge/gw-test/alerts/#"), Publisher(mosquitto))
    start(t.agent)
    publish(t.pub, t.values, 0, N_FIT)
    wait_for(lambda: t.agent.models_active() >= 1, 60, "the series' model")
    publish(t.pub, t.values, N_FIT, N_BEFORE)
    wait_for(lambda: scored(port) >= N_BEFORE - N_FIT, 60, "every reading scored")
    assert t.alarms.json() == [], "the trend alarmed before its model was put to the test"
    return t


def a_fault_is_still_raised(t: Trending) -> None:
    """After the trend went on without an alarm, a step of 15 noise widths is raised."""
    publish(t.pub, t.values, N_BEFORE + N_AFTER, N_BEFORE + N_AFTER + 20, offset=15.0)
    wait_for(lambda: t.alarms.json(), 30, "the fault's alarm")
    (first, *_) = t.alarms.json()
    assert first["state"] == "raised" and first["series"].endswith(TOPIC.split("/")[-1])


def close(t: Trending) -> None:
    t.pub.close()
    t.alarms.close()
    t.agent.stop()


def restart_then_continue(tmp_path: Path, mosquitto: Mosquitto, every_s: float, kill: bool) -> None:
    t = trending(tmp_path, mosquitto, {"live_state_every_s": every_s})
    agent, port, values, alarms, pub = t
    try:
        if kill:
            writes = agent.log().count("(periodic, ")
            wait_for(lambda: agent.log().count("(periodic, ") >= writes + 1, 10 + 2 * every_s, "a periodic write after the last reading")
            agent.kill()
        else:
            assert agent.stop() == 0
            assert "kept the live state of 1 series (stop" in agent.log()
        start(agent)
        agent.wait_log("restored the live state of 1 series")
        publish(pub, values, N_BEFORE, N_BEFORE + N_AFTER)
        wait_for(lambda: scored(port) >= N_AFTER, 60, "every reading after the restart scored")
        time.sleep(0.5)
        assert alarms.json() == [], f"the restart raised {alarms.json()}"
        a_fault_is_still_raised(t)  # still watching
    finally:
        close(t)


@pytest.mark.timeout(120)
def test_a_clean_restart_keeps_a_trending_series_out_of_alarm(tmp_path: Path, mosquitto: Mosquitto) -> None:
    restart_then_continue(tmp_path, mosquitto, every_s=0.0, kill=False)


@pytest.mark.timeout(120)
def test_a_crash_after_a_periodic_write_keeps_a_trending_series_out_of_alarm(tmp_path: Path, mosquitto: Mosquitto) -> None:
    restart_then_continue(tmp_path, mosquitto, every_s=1.0, kill=True)
