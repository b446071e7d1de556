"""Machines: the row alignment rule, MachineSet's learning/scoring/alarms, and ingest feeding it."""

from __future__ import annotations

import asyncio
import json
import math
import time

import numpy as np
import pytest

from edge_agent.config import AgentConfig
from edge_agent.ingest import Ingest
from edge_agent.machines import (
    MachineAlarmEvent,
    MachineSet,
    RowAssembler,
    TooManyMachines,
    machine_alert_id,
)
from edge_agent.model_store import ModelStore
from edge_agent.pipeline import InlineTrainer, Pipeline, ProcessTrainer, alert_id

SENSORS = ["current", "flow", "pressure"]


def _cfg(**machines: object) -> AgentConfig:
    return AgentConfig.model_validate({
        "gateway_id": "gw-t",
        "subscriptions": [
            {"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}", "machine": "{line}/{machine}"},
            {"topic": "plc/{line}/{machine}", "series": "{machine}/{sensor}", "format": "json_multi", "machine": "{line}/{machine}"},
        ],
        "detector": {"name": "adaptive"},
        "machines": {"min_train_rows": 400, "buffer_rows": 512, **machines},
        "ingest": {"max_past_age_s": 1e10},
    })


def _pump_rows(n: int, seed: int = 1) -> np.ndarray:
    """current, flow, pressure of a pump under a load that wanders within a fixed range (they
    move together; the first 500 rows show each sensor's whole band), plus sensor noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    load = 0.25 * np.sin(2 * np.pi * t / 60) + 0.1 * np.sin(2 * np.pi * t / 23 + 1) + 0.05 * np.sin(2 * np.pi * t / 7.3 + 2)
    return np.column_stack([
        5.0 + 2.0 * load + rng.normal(0, 0.01, n),
        30.0 + 10.0 * load + rng.normal(0, 0.05, n),
        2.0 + 0.5 * load + rng.normal(0, 0.005, n),
    ])


def _break(rows: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """current rises as flow falls (by about a fifth of each one's band), each kept inside
    its normal band (clipped 5 % short of its extremes)."""
    lo, hi = normal.min(axis=0), normal.max(axis=0)
    margin = 0.05 * (hi - lo)
    return np.clip(rows + [0.15, -0.75, 0.0], lo + margin, hi - margin)


# ---- the alignment rule ---------------------------------------------------------------------
def _assembler(stale_after: float = 30.0) -> tuple[RowAssembler, list[tuple[list[float], float, bool]]]:
    out: list[tuple[list[float], float, bool]] = []
    a = RowAssembler(stale_after, lambda v, ts, ok: out.append((v, ts, ok)))
    for s in ("a", "b", "c"):
        a.add_sensor(s)
    return a, out


def test_a_row_closes_when_every_sensor_has_reported_and_takes_the_newest_time() -> None:
    a, out = _assembler()
    a.offer(0, 1.0, 100.0)
    a.offer(2, 3.0, 100.2)
    assert out == []
    a.offer(1, 2.0, 100.1)
    assert out == [([1.0, 2.0, 3.0], 100.2, True)]


def test_a_repeated_sensor_closes_the_row_with_the_others_held() -> None:
    a, out = _assembler()
    for j in range(3):
        a.offer(j, float(j), 100.0)
    # b is slow: a and c report twice before it does again. Each repeat closes a row that
    # carries b's latest value (sample and hold).
    a.offer(0, 10.0, 101.0)
    a.offer(2, 12.0, 101.0)
    a.offer(0, 20.0, 102.0)
    assert out[1] == ([10.0, 1.0, 12.0], 101.0, True)
    a.offer(1, 11.0, 102.2)
    a.offer(2, 22.0, 102.3)
    assert out[2] == ([20.0, 11.0, 22.0], 102.3, True)


def test_rows_fall_into_step_with_the_cycle_whatever_reading_came_first() -> None:
    """Heard from mid-cycle (b, c, then a of the next cycle): without the time rule every
    row would pair a with the previous cycle's b and c for ever."""
    a, out = _assembler()
    a.offer(1, 1.0, 100.1)
    a.offer(2, 2.0, 100.2)
    for t in (101.0, 102.0, 103.0):
        a.offer(0, t, t)
        a.offer(1, t + 0.1, t + 0.1)
        a.offer(2, t + 0.2, t + 0.2)
    assert out[0][1] == 100.2 and not out[0][2]  # b and c of the first cycle, a never seen: incomplete
    assert out[1:] == [([t, t + 0.1, t + 0.2], t + 0.2, True) for t in (101.0, 102.0, 103.0)]


def test_a_sensor_older_than_stale_after_makes_the_row_incomplete() -> None:
    a, out = _assembler(stale_after=5.0)
    for j in range(3):
        a.offer(j, float(j), 100.0)
    for t in (101.0, 102.0, 107.0):
        a.offer(0, t, t)
        a.offer(2, t, t)
    # Rows of t=101 and 102 carry b (1 and 2 s old); the row of t=107 does not (7 s > 5 s).
    assert [(ts, ok) for _, ts, ok in out] == [(100.0, True), (101.0, True), (102.0, True)]
    a.offer(0, 108.0, 108.0)  # a repeats: closes the t=107 row
    values, ts, ok = out[-1]
    assert ts == 107.0 and not ok and math.isnan(values[1])
    assert a.stale_sensors(108.0) == ["b"]


# ---- MachineSet -----------------------------------------------------------------------------
def _feed_rows(ms: MachineSet, rows: np.ndarray, t0: float = 1000.0, machine: str = "l1/p1", split: bool = True) -> None:
    for i, r in enumerate(rows.tolist()):
        ts = t0 + i
        if split:  # one topic per sensor, slightly apart
            for j, s in enumerate(SENSORS):
                ms.feed(machine, s, r[j], ts + 0.01 * j)
        else:
            ms.feed_row(machine, list(zip(SENSORS, r, strict=True)), ts)


@pytest.mark.parametrize("split", [True, False])
def test_machine_learns_then_scores_and_a_broken_relation_raises_once_then_clears(split: bool) -> None:
    events: list[MachineAlarmEvent] = []
    ms = MachineSet(_cfg(), InlineTrainer(), events.append)
    rows = _pump_rows(1400)
    _feed_rows(ms, rows[:1000], split=split)
    m = ms.machines["l1/p1"]
    assert m.model is not None and m.sensors == SENSORS and m.model.version == 1
    assert m.n_scored > 550 and events == []
    # current rises as flow falls, each inside its normal band, for 120 rows, then restored.
    broken = _break(rows[1000:1120], rows[:1000])
    _feed_rows(ms, broken, t0=2000.0, split=split)
    _feed_rows(ms, rows[1120:1400], t0=2120.0, split=split)
    assert [e.state for e in events] == ["raised", "cleared"]
    raised, cleared = events
    assert 2000 <= raised.ts < 2010 and 2120 <= cleared.ts < 2200  # held while broken
    assert {c.sensor for c in raised.sensors[:2]} == {"current", "flow"}
    by = {c.sensor: c for c in raised.sensors}
    assert by["current"].z > 0 and by["flow"].z < 0  # "current high, flow low"
    assert by["flow"].expected > by["flow"].value
    assert raised.seq == cleared.seq == 1
    assert raised.alert_id == machine_alert_id("gw-t", "l1/p1", "raised", 1, raised.ts)
    assert cleared.alert_id == machine_alert_id("gw-t", "l1/p1", "cleared", 1, raised.ts)
    assert raised.alert_id not in {alert_id("gw-t", "l1/p1", "raised", seq, raised.ts) for seq in range(3)}
    assert cleared.raised_alert_id == raised.alert_id
    assert raised.message.startswith(("current high, flow low: ", "flow low, current high: ")), raised.message
    assert cleared.message.startswith("back to normal after ") and cleared.held_s == cleared.ts - raised.ts
    doc = json.loads(json.dumps(raised.payload("gw-t"), allow_nan=False))
    assert doc["machine"] == "l1/p1" and doc["model"] == {"detector": "baseline_t2", "version": 1}
    assert doc["seq"] == 1 and doc["message"] == raised.message
    assert set(doc["sensors"][0]) == {"sensor", "value", "expected", "deviation", "z", "part", "kind"}
    assert {s["kind"] for s in doc["sensors"]} <= {"high", "low", "rising fast", "falling fast"}
    status = ms.status("l1/p1")
    assert status["state"] == "normal" and status["alarms"] == 1 and status["stale_sensors"] == []
    # The next alarm has the next number, and every edge its own id.
    _feed_rows(ms, _break(rows[1000:1120], rows[:1000]), t0=3000.0, split=split)
    assert events[2].state == "raised" and events[2].seq == 2
    assert len({e.alert_id for e in events}) == len(events)


def test_a_new_sensor_while_learning_restarts_training_and_after_the_model_is_ignored() -> None:
    ms = MachineSet(_cfg(), InlineTrainer(), lambda e: None)
    rows = _pump_rows(500)
    _feed_rows(ms, rows[:60])
    m = ms.machines["l1/p1"]
    assert m.rows_held == 60
    ms.feed("l1/p1", "vibration", 1.0, 1060.0)
    assert m.rows_held == 0 and m.sensors == [*SENSORS, "vibration"]
    ms2 = MachineSet(_cfg(), InlineTrainer(), lambda e: None)
    _feed_rows(ms2, rows[:450])
    ms2.feed("l1/p1", "vibration", 1.0, 1450.0)
    m2 = ms2.machines["l1/p1"]
    assert m2.model is not None and m2.sensors == SENSORS and m2.n_ignored == 1 and m2.ignored_sensors == {"vibration"}


def test_incomplete_rows_are_not_scored_and_limits_hold() -> None:
    ms = MachineSet(_cfg(max_machines=1, rows={"stale_after_s": 3.0}), InlineTrainer(), lambda e: None)
    rows = _pump_rows(600)
    _feed_rows(ms, rows[:500])
    m = ms.machines["l1/p1"]
    scored = m.n_scored
    for i, r in enumerate(rows[500:520].tolist()):  # pressure falls silent
        ms.feed("l1/p1", "current", r[0], 1500.0 + i)
        ms.feed("l1/p1", "flow", r[1], 1500.0 + i + 0.01)
    assert m.n_scored - scored == 3  # rows with pressure at most 3 s old (1499.02 -> 1502.01)
    assert m.n_incomplete == 16  # and the last one is still open
    assert ms.status("l1/p1")["stale_sensors"] == ["pressure"]
    with pytest.raises(TooManyMachines):
        ms.feed("l1/p2", "current", 1.0, 1.0)


def test_fit_in_a_worker_process_and_a_stored_machine_model(tmp_path) -> None:
    """The live path: ProcessTrainer fits in a spawned worker and saves under the machine's
    id in a machine store; rows that arrive meanwhile are replayed into the new model."""
    store = ModelStore.for_machines(tmp_path / "machine_models", fsync=False)
    rows = _pump_rows(900)

    async def main() -> MachineSet:
        trainer = ProcessTrainer(asyncio.get_running_loop(), store)
        ms = MachineSet(_cfg(), trainer, lambda e: None, store=store)
        try:
            _feed_rows(ms, rows[:450], machine="../../etc/passwd")
            m = ms.machines["../../etc/passwd"]
            assert m.fit_pending and m.model is None
            deadline = time.monotonic() + 60
            i = 450
            while m.model is None and time.monotonic() < deadline:
                _feed_rows(ms, rows[i:i + 1], t0=1000.0 + i, machine="../../etc/passwd")
                i += 1
                await asyncio.sleep(0.01)
            assert m.model is not None, ms.last_fit_error
            assert m.last_row_ts >= 1000.0 + i - 2  # caught up with the rows that came meanwhile
            return ms
        finally:
            trainer.close()

    ms = asyncio.run(main())
    assert store.list_series() == ["../../etc/passwd"]
    assert (store.series_dir("../../etc/passwd").parent == store.root)
    loaded, errors = store.load_active("../../etc/passwd")
    assert loaded is not None and not errors and loaded.meta["sensors"] == SENSORS
    # A restarted agent adopts the stored model and scores on.
    ms2 = MachineSet(_cfg(), InlineTrainer(), lambda e: None)
    ms2.adopt("../../etc/passwd", loaded)
    _feed_rows(ms2, rows[600:700], t0=5000.0, machine="../../etc/passwd")
    assert ms2.machines["../../etc/passwd"].n_scored >= 99
    assert ms.n_models_trained == 1


# ---- ingest -----------------------------------------------------------------------------------
def _ingest(cfg: AgentConfig) -> tuple[Ingest, Pipeline, MachineSet, list, list]:
    series_alarms: list = []
    machine_alarms: list = []
    pipe = Pipeline(cfg, trainer=InlineTrainer(), on_alarm=series_alarms.append)
    ms = MachineSet(cfg, InlineTrainer(), machine_alarms.append)
    return Ingest(cfg, pipe, machines=ms), pipe, ms, series_alarms, machine_alarms


def test_json_multi_feeds_every_series_and_the_machine_row_and_refuses_bad_fields_alone() -> None:
    cfg = _cfg()
    ing, pipe, ms, _, _ = _ingest(cfg)
    rows = _pump_rows(600)
    t0 = time.time() - 1000
    for i, r in enumerate(rows.tolist()):
        ing.handle("plc/l1/p9", json.dumps({"ts": t0 + i, **dict(zip(SENSORS, r, strict=True))}).encode())
    assert ing.rejected == {} and ing.readings == 1800
    assert {f"p9/{s}" for s in SENSORS} <= set(pipe.series)
    assert all(pipe.series[f"p9/{s}"].model is not None for s in SENSORS)
    m = ms.machines["l1/p9"]
    assert m.model is not None and m.n_scored == 200  # one message, one row: 400 fit, 200 scored
    # A bad field is refused on its own; the rest of the message goes on.
    ing.handle("plc/l1/p9", json.dumps({"ts": t0 + 600, "current": 5.0, "flow": "n/a", "pressure": 2.0, "state": True}).encode())
    assert ing.rejected == {"not_a_number": 2} and ing.readings == 1802
    ing.handle("plc/l1/p9", json.dumps({"ts": t0 + 601, "current": 5.0, "flow": 30.0, "pressure": 2.0}).encode())
    assert m.n_rows == 602  # the row with flow missing held flow's last value, then this one
    # Junk does not crash it and is counted by reason.
    for junk in (b"", b"[1]", b'{"ts": 1}', b'{"a/b": 1.0}', json.dumps({f"k{i}": 1.0 for i in range(10_001)}).encode()):
        ing.handle("plc/l1/p9", junk)
    assert {"empty", "not_an_object", "bad_key", "batch_too_large"} <= set(ing.rejected)


def test_per_sensor_topics_feed_the_machine_and_a_relation_break_leaves_the_series_quiet() -> None:
    """The issue's scenario without MQTT: each sensor stays in its band while the relation
    breaks; the machine raises one alarm naming current and flow, the series stay silent."""
    cfg = _cfg()
    ing, pipe, ms, series_alarms, machine_alarms = _ingest(cfg)
    rows = _pump_rows(1400)
    rows[1000:1120] = _break(rows[1000:1120], rows[:1000])
    t0 = time.time() - 2000
    for i, r in enumerate(rows.tolist()):
        for j, s in enumerate(SENSORS):
            ing.handle(f"plant/l1/p1/{s}", json.dumps({"value": r[j], "ts": t0 + i + 0.01 * j}).encode())
    assert ing.rejected == {}
    assert [e.state for e in machine_alarms] == ["raised", "cleared"]
    assert {c.sensor for c in machine_alarms[0].sensors[:2]} == {"current", "flow"}
    assert series_alarms == []
    assert ms.machines["l1/p1"].n_scored == 1400 - 400  # every row after the 400 fit rows


def test_an_unusable_machine_id_is_counted_and_the_series_still_take_the_reading() -> None:
    ing, pipe, ms, _, _ = _ingest(_cfg())
    line = "x" * 300
    ing.handle(f"plant/{line}/p1/current", b'{"value": 1.0}')
    ing.handle(f"plc/{line}/p1", b'{"current": 1.0}')
    assert ing.readings == 2 and set(pipe.series) == {"p1/current"}
    assert ing.rejected == {"bad_machine_id": 2} and ms.machines == {}


def test_without_machines_ingest_is_unchanged_and_config_mistakes_name_the_key() -> None:
    cfg = _cfg()
    pipe = Pipeline(cfg, trainer=InlineTrainer(), on_alarm=lambda e: None)
    ing = Ingest(cfg, pipe)  # phase 1: the agent passes no MachineSet yet
    ing.handle("plant/l1/p1/current", b'{"value": 1.0}')
    ing.handle("plc/l1/p1", b'{"current": 1.0, "flow": 2.0}')
    assert ing.readings == 3 and ing.rejected == {}
    from edge_agent.config import ConfigError, load_config

    for sub, needle in (
        ({"topic": "a/{m}/{sensor}", "format": "json_multi", "series": "{m}/{sensor}"}, "must not define {sensor}"),
        ({"topic": "a/{m}", "format": "json_multi", "series": "{m}"}, "must use {sensor}"),
        ({"topic": "a/{m}/{sensor}", "series": "{m}/{sensor}", "machine": "{line}"}, "machine template"),
        ({"topic": "a/{m}/{s}", "series": "{m}/{s}", "machine": "{m}"}, "sensor template"),
        ({"topic": "a/{m}/{sensor}", "series": "{m}/{sensor}", "machine": "{m}", "format": "json_batch"}, "json_batch"),
    ):
        with pytest.raises(ConfigError) as info:
            load_config(None, environ={"EDGE_AGENT__SUBSCRIPTIONS": json.dumps([sub])})
        assert "subscriptions[0]" in str(info.value) and needle in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"EDGE_AGENT__MACHINES__ALARMS__CLEAR_RATIO": "0.8"})
    assert "machines.alarms" in str(info.value) and "now hold_ratio" in str(info.value)


# ---- the alarm decision a series uses ---------------------------------------------------------
def test_a_lasting_deviation_is_accepted_and_a_rebaseline_ends_an_alarm() -> None:
    """The shared alarm state's acceptance (machines.alarms.accept_after_s) ends a machine alarm
    with "accepted", and the model takes the current behaviour as normal: no new raise."""
    events: list[MachineAlarmEvent] = []
    ms = MachineSet(_cfg(alarms={"accept_after_s": 30.0, "accept_min_readings": 20}), InlineTrainer(), events.append)
    rows = _pump_rows(1400)
    _feed_rows(ms, rows[:1000])
    _feed_rows(ms, rows[1000:1100] + [0.15, -0.75, 0.0], t0=2000.0)  # a lasting new relation
    assert [e.state for e in events] == ["raised", "accepted"]
    raised, accepted = events
    assert accepted.raised_alert_id == raised.alert_id and accepted.seq == raised.seq == 1
    assert 30.0 <= accepted.held_s < 35.0 and "accepted as the new normal by the acceptance time" in accepted.message
    m = ms.machines["l1/p1"]
    assert not m.alarm.active and m.state == "normal"
    # An operator's rebaseline: the return to the old relation raises (alarm 2), and the
    # rebaseline accepts it.
    _feed_rows(ms, rows[1100:1130], t0=2100.0)
    assert [e.state for e in events[2:]] == ["raised"] and events[2].seq == 2
    out = ms.rebaseline("l1/p1", by="the rebaseline command")
    assert out["was_in_alarm"] and out["accepted_alert_id"] == events[2].alert_id == events[-1].raised_alert_id
    assert events[-1].state == "accepted" and "by the rebaseline command" in events[-1].message
    assert not m.alarm.active
    with pytest.raises(ValueError, match="no model"):
        ms.rebaseline("l1/nope")


def test_numbers_and_open_alarms_go_on_after_a_restart() -> None:
    """What Agent.start hands over from the outbox: the last alarm number per machine, and the
    alarms open when it stopped. The open one clears with its own id and number."""
    events: list[MachineAlarmEvent] = []
    ms = MachineSet(_cfg(), InlineTrainer(), events.append)
    rows = _pump_rows(1400)
    _feed_rows(ms, rows[:1000])
    _feed_rows(ms, _break(rows[1000:1040], rows[:1000]), t0=2000.0)
    assert [e.state for e in events] == ["raised"]
    raised = events[0]
    model = ms.machines["l1/p1"].model
    # A new agent: the model from the store, the number and the open alarm from the outbox.
    events2: list[MachineAlarmEvent] = []
    ms2 = MachineSet(_cfg(), InlineTrainer(), events2.append)
    ms2.alarm_seqs = {"l1/p1": 7}
    ms2.adopt("l1/p1", model)
    ms2.restore_alarm("l1/p1", raised.alert_id, raised.ts)
    assert ms2.status("l1/p1")["alarm"]["alert_id"] == raised.alert_id
    _feed_rows(ms2, rows[1040:1400], t0=2040.0)
    assert [e.state for e in events2] == ["cleared"]
    assert events2[0].raised_alert_id == raised.alert_id
    assert events2[0].alert_id == machine_alert_id("gw-t", "l1/p1", "cleared", 7, raised.ts)
    _feed_rows(ms2, _break(rows[1000:1040], rows[:1000]), t0=3000.0)
    assert events2[1].state == "raised" and events2[1].seq == 8
