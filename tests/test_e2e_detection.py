"""What the agent alarms on, end to end: a PLC-side paho client publishes fast, the agent (a
real process, default detector) scores, and a SCADA-side client receives the alarms.

Readings are published as fast as the broker takes them, so most arrive while each series'
first model is still being fitted in the worker process: they are scored when it lands."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from helpers import AgentProcess, Mosquitto, Publisher, Subscriber, agent_config, wait_for

TRAIN = 500
N = 2000
T0 = time.time() - 2 * N  # readings one second apart, all in the recent past
SPIKES = (900, 1300, 1700)
STEP = (1000, 1400)  # first and last reading of a +8 step
STUCK = (1100, 1300)


def publish_all(pub: Publisher, rows: list[tuple[str, float, float]]) -> None:
    infos = [pub.reading(t, v, ts) for t, v, ts in rows]
    for info in infos:
        info.wait_for_publish(60)


def signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2024)
    spikes = 20.0 + rng.normal(0.0, 1.0, N)
    for at in SPIKES:
        spikes[at] += 12.0  # identical spikes, 400 readings apart
    step = 20.0 + rng.normal(0.0, 1.0, N)
    step[STEP[0]:STEP[1] + 1] += 8.0
    stuck = 20.0 + rng.normal(0.0, 1.0, N)
    stuck[STUCK[0]:STUCK[1] + 1] = stuck[STUCK[0] - 1]  # the transmitter repeats its last value
    return {"m1/pump": spikes, "m2/flow": step, "m3/temp": stuck}


@pytest.mark.timeout(180)
def test_spikes_a_held_step_and_a_stuck_sensor_each_alarmed_once(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = agent_config(tmp_path, mosquitto, **{"detector": {"min_train_samples": TRAIN}})
    agent = AgentProcess(tmp_path, cfg).start()
    scada = Subscriber(mosquitto, "edge/gw-test/alerts/#")
    pub = Publisher(mosquitto)
    try:
        agent.wait_connected()
        data = signals()
        rows = [(f"plant/l1/{sid}", float(x[k]), T0 + k) for k in range(N) for sid, x in data.items()]
        t = time.monotonic()
        publish_all(pub, rows)
        print(f"published {len(rows)} readings in {time.monotonic() - t:.2f} s")
        expected = 2 * len(SPIKES) + 2 + 2
        wait_for(lambda: len(scada.json()) >= expected, 90, f"{expected} alarm messages")
        time.sleep(1.0)  # anything extra would arrive now
        alarms = scada.json()
        by = {sid: sorted((a["ts"] - T0, a["state"], a.get("kind")) for a in alarms if a["series"] == sid) for sid in data}
        print(by)
        assert len(alarms) == expected, by
        # three identical spikes: three alarms, each raised at its spike, each explained as a spike
        assert [(round(ts), s, k) for ts, s, k in by["m1/pump"] if s == "raised"] == [(at, "raised", "spike") for at in SPIKES]
        # the step: raised at its start, held while it lasts, cleared only once it is over
        (r_ts, _, _), (c_ts, c_state, _) = by["m2/flow"]
        assert STEP[0] <= r_ts <= STEP[0] + 5 and c_state == "cleared" and STEP[1] < c_ts <= STEP[1] + 30
        # the stuck sensor: raised as stuck within a few readings, cleared once it moves again
        (s_ts, _, s_kind), (e_ts, e_state, _) = by["m3/temp"]
        assert s_kind == "stuck" and STUCK[0] < s_ts <= STUCK[0] + 15 and e_state == "cleared" and e_ts > STUCK[1]
        raised = next(a for a in alarms if a["series"] == "m2/flow" and a["state"] == "raised")
        assert raised["model"]["detector"] == "robust" and raised["direction"] == "up"
        assert raised["expected"]["low"] < 20.0 < raised["expected"]["high"] < raised["value"]
        assert raised["message"]
        cleared = next(a for a in alarms if a["series"] == "m2/flow" and a["state"] == "cleared")
        assert cleared["raised_alert_id"] == raised["alert_id"] and cleared["held_s"] == pytest.approx(c_ts - r_ts)
    finally:
        pub.close()
        scada.close()
        assert agent.stop() == 0


@pytest.mark.timeout(240)
def test_isolation_forest_alarms_on_spikes_published_before_its_models_exist(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Black-box run from issue 13: 10 series of 2,000 readings published within seconds.
    Before, every reading passed while the forests were being fitted and no alarm was raised,
    even on +25 spikes; now the readings wait for their model and are scored in order."""
    cfg = agent_config(tmp_path, mosquitto, **{"detector": {"name": "isolation_forest", "min_train_samples": 500}})
    agent = AgentProcess(tmp_path, cfg).start()
    scada = Subscriber(mosquitto, "edge/gw-test/alerts/#")
    pub = Publisher(mosquitto)
    spikes_at = (800, 1300, 1800)
    try:
        agent.wait_connected()
        rng = np.random.default_rng(7)
        values = rng.uniform(-1.0, 1.0, (10, 2000))
        values[:, list(spikes_at)] += 25.0
        rows = [(f"plant/l1/m{i}/vib", float(values[i, k]), T0 + k) for k in range(2000) for i in range(10)]
        t = time.monotonic()
        publish_all(pub, rows)
        took = time.monotonic() - t
        print(f"published 20,000 readings in {took:.2f} s")

        def raised() -> dict[str, set[int]]:
            out: dict[str, set[int]] = {}
            for a in scada.json():
                if a["state"] == "raised":
                    out.setdefault(a["series"], set()).add(round(a["ts"] - T0))
            return out

        try:
            wait_for(lambda: all(set(spikes_at) <= raised().get(f"m{i}/vib", set()) for i in range(10)), 120, "an alarm at every spike of every series")
        finally:
            print(raised(), len(scada.json()))
        log = agent.log()
        assert log.count(" active after ") == 10
        for i in range(10):
            assert set(spikes_at) <= raised()[f"m{i}/vib"]
        kinds = {a.get("kind") for a in scada.json() if a["state"] == "raised"}
        assert kinds <= {"out_of_range", "shape"} and "out_of_range" in kinds
    finally:
        pub.close()
        scada.close()
        assert agent.stop() == 0
