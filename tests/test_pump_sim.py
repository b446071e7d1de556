"""The simulated pump: correlated sensors, a relation break inside every band, and what sees it."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, Mosquitto, Subscriber

from edge_agent.config import AgentConfig
from edge_agent.ingest import Ingest
from edge_agent.machines import MachineSet
from edge_agent.pipeline import InlineTrainer, Pipeline
from edge_agent.pump_sim import SENSORS, Pump


def _trace(seconds: int, rate: float = 1.0, break_at: float | None = None, seed: int = 4) -> tuple[Pump, np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    pump = Pump.random("p1", rng)
    n = int(seconds * rate)
    ts = np.arange(n) / rate
    rows = np.empty((n, len(SENSORS)))
    for i, t in enumerate(ts):
        fire = break_at is not None and abs(t - break_at) < 0.5 / rate
        values, _ = pump.step(float(t), 1.0 / rate, rng, 1.0 if fire else 0.0, fire)
        rows[i] = [values[s] for s in SENSORS]
    return pump, ts, rows


def test_sensors_move_together_and_a_break_keeps_each_in_its_band() -> None:
    pump, ts, rows = _trace(1800, break_at=1200.0)
    normal = rows[:1200]
    flow, current = SENSORS.index("flow"), SENSORS.index("current")
    assert np.corrcoef(normal[:, flow], normal[:, current])[0, 1] > 0.95
    broken = rows[1215:1260]  # fully broken (after the 10 s ramp)
    for j in (flow, current):
        lo, hi = pump.band(SENSORS[j])
        assert lo <= broken[:, j].min() and broken[:, j].max() <= hi
        assert normal[:, j].min() <= broken[:, j].min() and broken[:, j].max() <= normal[:, j].max()
    # Against the relation: for its flow, the current is far higher than normal.
    fit = np.polyfit(normal[:, flow], normal[:, current], 1)
    resid_normal = normal[:, current] - np.polyval(fit, normal[:, flow])
    resid_broken = broken[:, current] - np.polyval(fit, broken[:, flow])
    assert resid_broken.mean() > 10 * resid_normal.std()
    # Each keeps its noise: a value pinned at the band's margin would be a stuck transmitter.
    assert (np.diff(rows[1195:1265, [flow, current]], axis=0) != 0).all()
    assert np.allclose(rows[1300:, flow], _trace(1800)[2][1300:, flow], atol=0.05 * (pump.band("flow")[1] - pump.band("flow")[0]))


@pytest.mark.parametrize("seed", [4, 1, 6])
def test_the_machine_sees_the_break_that_the_series_do_not(seed: int) -> None:
    """One sensor per topic at 1 Hz, through Ingest.handle: the machine raises one alarm
    naming current (high) and flow (low), held until the relation is restored; the
    per-series default raises nothing while the relation is broken (each sensor stays in its
    band). When it is restored the flow jumps back ~10 units in one reading (~7 of its noise
    scales): since session 5 (the spike tail weighed as evidence, the 0.5 predictor rate) that
    jump raises a spike on the flow series on these three seeds, 6.2-7.0 scales against fitted
    thresholds of 5.2-5.3 (before, with a predictor at 0.3 and thresholds of 6.1-6.5, it did not),
    cleared ~12 s later."""
    cfg = AgentConfig.model_validate({
        "gateway_id": "gw-t",
        "subscriptions": [{"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}", "machine": "{line}/{machine}"}],
        "ingest": {"max_past_age_s": 1e10},
    })
    series_alarms: list = []
    machine_alarms: list = []
    pipe = Pipeline(cfg, trainer=InlineTrainer(), on_alarm=series_alarms.append)
    ms = MachineSet(cfg, InlineTrainer(), machine_alarms.append)
    ing = Ingest(cfg, pipe, machines=ms)
    _, ts, rows = _trace(1500, break_at=1200.0, seed=seed)
    t0 = time.time() - 2000
    for t, row in zip(ts.tolist(), rows.tolist(), strict=True):
        for j, s in enumerate(SENSORS):
            ing.handle(f"plant/l1/p1/{s}", json.dumps({"value": row[j], "ts": t0 + t + 0.01 * j}).encode())
    assert ing.rejected == {}
    assert [(e.series, e.state) for e in series_alarms if e.ts - t0 < 1260] == []
    assert {(e.series, e.kind) for e in series_alarms if e.state == "raised"} <= {("p1/flow", "spike")}
    assert [e.state for e in machine_alarms] == ["raised", "cleared"]
    raised, cleared = machine_alarms
    assert 1200 <= raised.ts - t0 < 1215 and 1260 <= cleared.ts - t0 < 1320
    top = {c.sensor: c for c in raised.sensors[:2]}
    assert set(top) == {"current", "flow"} and top["current"].z > 0 and top["flow"].z < 0


@pytest.mark.timeout(60)
def test_simulate_publishes_pumps_and_prints_the_break(tmp_path: Path, mosquitto: Mosquitto) -> None:
    sub = Subscriber(mosquitto, "plc/#")
    assert sub.subscribed.wait(10)
    try:
        sim = subprocess.run(
            [sys.executable, "-m", "edge_agent", "simulate", "--broker", mosquitto.address, "--machines", "0", "--pumps", "2",
             "--pump-format", "json_multi", "--rate", "20", "--duration", "3", "--warmup", "1", "--break-rate", "200000", "--seed", "3"],
            capture_output=True, text=True, timeout=30, cwd=REPO,
        )
        assert sim.returncode == 0, sim.stderr
        events = [json.loads(line) for line in sim.stdout.splitlines()]
        assert events[0]["machines"] == ["p1", "p2"] and len(events[0]["series"]) == 10
        breaks = [e for e in events if e["event"] == "fault"]
        assert breaks and {b["fault"] for b in breaks} == {"relation_break"}
        assert breaks[0]["series"] == [f"{breaks[0]['machine']}/current", f"{breaks[0]['machine']}/flow"]
        time.sleep(0.5)
        msgs = sub.json()
        assert len(msgs) > 50 and set(msgs[0]) == {"ts", *SENSORS}
    finally:
        sub.close()


@pytest.mark.timeout(60)
def test_pumps_publish_at_their_own_rate_and_breaks_wait_for_their_warmup(tmp_path: Path, mosquitto: Mosquitto) -> None:
    sub = Subscriber(mosquitto, "plc/#")
    assert sub.subscribed.wait(10)
    try:
        sim = subprocess.run(
            [sys.executable, "-m", "edge_agent", "simulate", "--broker", mosquitto.address, "--machines", "1", "--pumps", "1",
             "--pump-format", "json_multi", "--rate", "20", "--pump-rate", "4", "--duration", "3", "--warmup", "0",
             "--break-rate", "200000", "--break-warmup", "30", "--seed", "3"],
            capture_output=True, text=True, timeout=30, cwd=REPO,
        )
        assert sim.returncode == 0, sim.stderr
        events = [json.loads(line) for line in sim.stdout.splitlines()]
        assert not [e for e in events if e.get("fault") == "relation_break"]  # held back by --break-warmup
        time.sleep(0.5)
        msgs = sub.json()
        assert 8 <= len(msgs) <= 14, len(msgs)  # 4 a second for 3 s, not 20
        gaps = np.diff([m["ts"] for m in msgs])
        assert 0.2 <= float(np.median(gaps)) <= 0.3
    finally:
        sub.close()


@pytest.mark.parametrize("rate", [5.0, 20.0])
def test_the_machine_sees_the_break_at_faster_rates(rate: float) -> None:
    """baseline_t2's relation lag and variogram lags are in seconds, not rows: at 5 and 20 Hz
    (fitted on 240 s of rows) the break is raised within seconds, as at 1 Hz. With them in rows
    (before) 20 Hz never raised and 5 Hz raised 65 s late on seed 1."""
    n_fit = int(240 * rate)
    cfg = AgentConfig.model_validate({"gateway_id": "gw-t", "machines": {"min_train_rows": n_fit, "buffer_rows": n_fit}})
    events: list = []
    ms = MachineSet(cfg, InlineTrainer(), events.append)
    _, ts, rows = _trace(330, rate=rate, break_at=300.0, seed=1)
    for t, row in zip(ts.tolist(), rows.tolist(), strict=True):
        ms.feed_row("l1/p1", list(zip(SENSORS, row, strict=True)), 1e9 + t)
    assert [e.state for e in events] == ["raised"], [(e.state, e.ts - 1e9) for e in events]
    assert 300 <= events[0].ts - 1e9 < 310
    assert {c.sensor for c in events[0].sensors[:2]} == {"current", "flow"}
