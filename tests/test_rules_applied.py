"""The rules applied by the running pipeline: each setting changes what a series does.

In-process (``Pipeline`` with the inline trainer, ``Ingest`` for topic fields); the same rules
through a real broker and agent are in ``test_alarm_lifecycle_e2e.py``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest

from edge_agent.config import AgentConfig
from edge_agent.ingest import Ingest
from edge_agent.pipeline import AlarmEvent, InlineTrainer, Pipeline

RULES = [
    {"name": "all", "match": {"series": "*"}, "priority": "low"},
    {"name": "temperatures", "match": {"sensor": "temp*"}, "detector": "statistical", "params": {"k": 4.0},
     "min_train_samples": 60, "on_delay": 3, "clear_after": 4, "unit": "degC"},
    {"name": "vibrations", "match": {"sensor": "vib*"}, "priority": "medium", "min_train_samples": 120, "unit": "mm/s"},
    {"name": "pressure", "match": {"series": "m7/pressure"}, "priority": "critical", "unit": "bar",
     "limits": {"hihi": 9.5, "hi": 8.0, "lo": 1.0, "deadband": 0.2}},
    {"name": "spare", "match": {"line": "spare"}, "enabled": False},
]


def make(rules: list[dict[str, Any]] = RULES, **over: Any) -> tuple[Pipeline, list[AlarmEvent]]:
    cfg = AgentConfig.model_validate({"detector": {"name": "robust", "min_train_samples": 100}, "rules": rules, **over})
    events: list[AlarmEvent] = []
    return Pipeline(cfg, InlineTrainer(), events.append), events


def feed(pipe: Pipeline, sid: str, values: Any, t0: float = 1_700_000_000.0) -> None:
    for i, v in enumerate(values):
        pipe.process(sid, float(v), t0 + i)


def normal(n: int, seed: int = 1) -> np.ndarray:
    return 20.0 + np.random.default_rng(seed).uniform(-1.0, 1.0, n)


def test_each_series_gets_its_rules_detector_params_and_training_size() -> None:
    pipe, _ = make()
    feed(pipe, "m1/temp", normal(60))
    t = pipe.series["m1/temp"]
    assert t.model is not None and t.model.detector.name == "statistical" and t.model.detector.k == 4.0
    assert t.model.meta["n_samples"] == 60
    feed(pipe, "m1/vibration", normal(119))
    assert pipe.series["m1/vibration"].model is None  # its rule wants 120
    feed(pipe, "m1/vibration", normal(1), t0=1_700_001_000.0)
    v = pipe.series["m1/vibration"]
    assert v.model is not None and v.model.detector.name == "robust"
    # Resolved once: the series holds a reference to one shared settings object.
    feed(pipe, "m2/temp", normal(3))
    assert pipe.series["m2/temp"].settings is t.settings


def test_on_delay_waits_for_consecutive_anomalous_readings() -> None:
    pipe, events = make()
    feed(pipe, "m1/temp", normal(60))
    t0 = 1_700_010_000.0
    feed(pipe, "m1/temp", [40.0, 40.0, 20.0, 40.0, 40.0], t0)  # never three in a row
    assert events == []
    feed(pipe, "m1/temp", [40.0], t0 + 10)
    assert [e.state for e in events] == ["raised"]  # the third of 40, 40, 40
    assert events[0].ts == t0 + 10 and events[0].priority == 1 and events[0].unit == "degC"


def test_clear_after_and_deadband_come_from_the_rules() -> None:
    rules = [{"match": {"series": "a/*"}, "detector": "statistical", "params": {"k": 3.0}, "min_train_samples": 60,
              "clear_after": 2, "deadband": 0.1}]
    pipe, events = make(rules)
    feed(pipe, "a/x", normal(60))
    det = pipe.series["a/x"].model.detector
    t0 = 1_700_020_000.0
    feed(pipe, "a/x", [det.mean + 10 * det.std], t0)
    assert [e.state for e in events] == ["raised"]
    # 0.8 x threshold holds at the global hold_ratio 0.7, not with deadband 0.1 (holds above 0.9).
    near = det.mean + 0.8 * det.k * det.std
    feed(pipe, "a/x", [near, near], t0 + 1)
    assert [e.state for e in events] == ["raised", "cleared"]  # after clear_after = 2, not 10

    default, ev2 = make([])
    feed(default, "a/x", normal(100))
    d2 = default.series["a/x"]
    assert d2.settings.deadband == pytest.approx(0.3) and d2.settings.policy.hold_ratio == pytest.approx(0.7)


def test_a_disabled_series_is_kept_but_neither_trained_scored_nor_alarmed() -> None:
    pipe, events = make()
    ing = Ingest(pipe.cfg, pipe)
    now = time.time()
    for i in range(150):
        ing.handle("plant/spare/m9/temp", json.dumps({"value": 20.0 + (i % 3), "ts": now - 150 + i}).encode())
    ing.handle("plant/spare/m9/temp", json.dumps({"value": 1e6, "ts": now}).encode())
    s = pipe.series["m9/temp"]
    assert s.settings.enabled is False and s.state == "disabled"
    assert s.model is None and s.n_scored == 0 and s.count == 151 and events == []


def test_a_rule_on_a_field_outside_the_series_id_is_applied_through_ingest() -> None:
    # {line} is not in the series id ({machine}/{sensor}): resolved from the topic's fields.
    pipe, _ = make()
    assert pipe.settings.provenance("m9/temp").undecided  # from the id alone it cannot be told
    ing = Ingest(pipe.cfg, pipe)
    ing.handle("plant/line1/m9/temp", json.dumps({"value": 1.0, "ts": time.time()}).encode())
    assert pipe.series["m9/temp"].settings.enabled is True
    pipe2, _ = make()
    Ingest(pipe2.cfg, pipe2).handle("plant/spare/m9/temp", json.dumps({"value": 1.0, "ts": time.time()}).encode())
    assert pipe2.series["m9/temp"].settings.enabled is False


def test_limits_raise_and_clear_each_limit_with_its_deadband_while_learning() -> None:
    pipe, events = make()
    t0 = 1_700_030_000.0
    # No model yet (100 readings to learn): limits come from the datasheet, not from data.
    feed(pipe, "m7/pressure", [5.0, 8.1, 9.6, 9.4, 9.2, 7.9, 7.7, 0.9, 1.3], t0)
    assert pipe.series["m7/pressure"].model is None
    got = [(e.limit, e.state, e.setpoint) for e in events]
    assert got == [("hi", "raised", 8.0), ("hihi", "raised", 9.5), ("hihi", "cleared", 9.5), ("hi", "cleared", 8.0),
                   ("lo", "raised", 1.0), ("lo", "cleared", 1.0)]
    assert {e.source for e in events} == {"limit"} and {e.priority for e in events} == {4}
    hi_raise, hi_clear = events[0], events[3]
    assert hi_clear.raised_alert_id == hi_raise.alert_id and hi_clear.seq == hi_raise.seq
    assert len({e.alert_id for e in events}) == len(events)
    assert "Hi limit 8 bar reached: value 8.1 bar" == hi_raise.message
    assert (hi_raise.expected_low, hi_raise.expected_high, hi_raise.direction) == (1.0, 8.0, "up")


def test_limit_and_model_alarms_are_separate_conditions_and_do_not_hide_each_other() -> None:
    rules = [{"match": {"series": "p"}, "detector": "statistical", "params": {"k": 3.0}, "min_train_samples": 60,
              "priority": "high", "limits": {"hi": 30.0, "priority": "critical"}}]
    pipe, events = make(rules)
    feed(pipe, "p", normal(60))
    t0 = 1_700_040_000.0
    feed(pipe, "p", [25.0], t0)  # the model alarms; the limit (30) does not
    feed(pipe, "p", [35.0], t0 + 1)  # now the limit too; the model's alarm stays raised
    s = pipe.series["p"]
    assert [(e.source, e.state, e.priority) for e in events] == [("model", "raised", 3), ("limit", "raised", 4)]
    assert s.alarm.active and s.limits.active == ("hi",) and s.state == "alarm"
    feed(pipe, "p", normal(12, seed=4), t0 + 2)
    assert [(e.source, e.state) for e in events[2:]] == [("limit", "cleared"), ("model", "cleared")]
    model_clear = events[3]
    assert model_clear.raised_alert_id == events[0].alert_id and model_clear.seq == events[0].seq == 1
    assert not s.active


def test_limits_need_on_delay_consecutive_readings_beyond_the_setpoint() -> None:
    rules = [{"match": {"series": "p"}, "on_delay": 2, "limits": {"hi": 10.0}}]
    pipe, events = make(rules)
    feed(pipe, "p", [11.0, 9.0, 11.0, 9.0, 11.0, 11.0])
    assert [(e.limit, e.state, e.ts - 1_700_000_000.0) for e in events] == [("hi", "raised", 5.0)]


def test_batches_check_limits_reading_by_reading() -> None:
    pipe, events = make([{"match": {"series": "p"}, "limits": {"hi": 10.0}}])
    pipe.process_batch("p", np.array([1.0, 11.0, 12.0, 9.0]), np.arange(4.0) + 1_700_000_000.0)
    assert [(e.state, e.value) for e in events] == [("raised", 11.0), ("cleared", 9.0)]
