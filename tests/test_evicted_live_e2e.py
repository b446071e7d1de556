"""An evicted series must come back with its live state (issue 13), end to end: a PLC-side paho
client publishes a steady trend to a real agent (``robust``, ``series.max_series`` 2). The trend
series trains and scores on, goes quiet, and is evicted for the budget by two other series; its
readings come back (and, in the second case, the agent is stopped and started first, while the
series is evicted). The trend goes on: no alarm, because the series is reloaded with the live
state it was evicted with, not from its fit-end state (which scores every reading of the trend
anomalous and holds the alarm). A real fault afterwards is still raised."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import (
    Mosquitto,
    wait_for,
)
from test_series_live_e2e import (
    N_AFTER,
    N_BEFORE,
    T0,
    a_fault_is_still_raised,
    close,
    metric,
    publish,
    scored,
    start,
    trending,
)


def evicted_then_back(tmp_path: Path, mosquitto: Mosquitto, restart: bool) -> None:
    t = trending(tmp_path, mosquitto, {"max_series": 2, "idle_s": 1.0, "live_state_every_s": 0.0})
    agent, port, values, alarms, pub = t
    try:
        # The trend goes quiet (idle after series.idle_s, seen by the upkeep's sweep), a busy
        # series and a new one arrive: the trend is the one that makes room.
        evicted = 'edge_agent_series_evicted_total{class="idle_model"}'
        for attempt in range(20):  # bounded: the sweep that sees it idle runs once a second
            time.sleep(1.5)
            now = T0 + 60.0 * (N_BEFORE + 100 + 10 * attempt)
            for k in range(3):
                pub.reading("plant/l1/m2/busy", 1.0 + k, now + k).wait_for_publish(10)
            pub.reading(f"plant/l1/m3/new{attempt}", 1.0, now).wait_for_publish(10)
            try:
                wait_for(lambda: metric(port, evicted) >= 1, 3, "the trend series evicted")
                break
            except TimeoutError:
                continue
        assert metric(port, evicted) >= 1, agent.log()[-3000:]
        assert metric(port, "edge_agent_series_live_states_kept") == 1  # the trend's, in the budget
        if restart:  # stopped and started while evicted: the live-state file must keep it
            assert agent.stop() == 0
            start(agent)
        publish(pub, values, N_BEFORE, N_BEFORE + N_AFTER)
        wait_for(lambda: scored(port) >= (N_AFTER if restart else N_BEFORE), 60,
                 "every reading after its return scored")
        time.sleep(0.5)
        assert alarms.json() == [], f"the evicted series came back in alarm: {alarms.json()}"
        if restart:
            assert "kept the live state of 1 series (stop" in agent.log()
            agent.wait_log("restored the live state of 1 series")
        else:
            agent.wait_log("reloaded with its live state (the series had been evicted)")
        assert metric(port, "edge_agent_series_live_states_kept") == 0  # taken back
        a_fault_is_still_raised(t)  # still watching
    finally:
        close(t)


@pytest.mark.timeout(120)
def test_a_trending_series_evicted_for_the_budget_comes_back_out_of_alarm(tmp_path: Path, mosquitto: Mosquitto) -> None:
    evicted_then_back(tmp_path, mosquitto, restart=False)


@pytest.mark.timeout(120)
def test_a_restart_while_it_is_evicted_keeps_its_live_state(tmp_path: Path, mosquitto: Mosquitto) -> None:
    evicted_then_back(tmp_path, mosquitto, restart=True)
