"""The alarm decision on its own: raise once, hold with hysteresis, clear, accept as new normal."""

from __future__ import annotations

import pytest

from edge_agent.alarm_state import ACCEPTED, CLEARED, NONE, RAISED, AlarmPolicy, AlarmState
from edge_agent.config import AgentConfig


def run(scores: list[float], policy: AlarmPolicy, dt: float = 1.0, normal: float = 0.0) -> list[int]:
    state = AlarmState()
    return [state.update(s, 1.0, i * dt, policy, normal) for i, s in enumerate(scores)]


def test_raised_once_and_held_while_above_the_hold_level() -> None:
    p = AlarmPolicy(hold_ratio=0.7, clear_after=3, accept_after_s=None)
    # 1.5 raises; 0.8 and 0.75 (>= 0.7) hold and reset the quiet count; three below clear.
    out = run([0.1, 1.5, 2.0, 0.8, 0.5, 0.5, 0.75, 0.5, 0.5, 0.5, 0.1], p)
    assert out == [NONE, RAISED, NONE, NONE, NONE, NONE, NONE, NONE, NONE, CLEARED, NONE]


def test_without_hysteresis_a_score_hovering_at_the_threshold_would_chatter() -> None:
    hovering = [1.05, 0.95, 1.02, 0.9, 1.01, 0.93] * 5
    held = run(hovering, AlarmPolicy(hold_ratio=0.7, clear_after=2, accept_after_s=None))
    assert held.count(RAISED) == 1 and CLEARED not in held
    chatter = run(hovering, AlarmPolicy(hold_ratio=1.0, clear_after=1, accept_after_s=None))
    assert chatter.count(RAISED) == 15


def test_accepted_after_the_time_and_the_readings_both_passed() -> None:
    p = AlarmPolicy(hold_ratio=0.7, clear_after=3, accept_after_s=100.0, accept_min_readings=20)
    out = run([2.0] * 200, p, dt=10.0)  # 100 s reached at reading 10, 20 readings at reading 20
    assert out.index(RAISED) == 0 and out.index(ACCEPTED) == 20
    # Still deviating after the acceptance raises anew here: it is the caller (the pipeline)
    # that re-centres the model on an acceptance, so that the scores fall.
    assert out[21] == RAISED
    slow = run([2.0] * 200, p, dt=1.0)  # 20 readings at reading 20, 100 s only at reading 100
    assert slow.index(ACCEPTED) == 100


def test_never_accepted_when_accept_after_is_null() -> None:
    assert ACCEPTED not in run([2.0] * 5000, AlarmPolicy(accept_after_s=None), dt=3600.0)


def test_hold_level_measured_from_the_detectors_normal_score() -> None:
    # An isolation forest scores ordinary readings ~0.5: with threshold 0.7 the hold level is
    # 0.5 + 0.7 * 0.2 = 0.64, not 0.49 (which every ordinary reading would reach).
    p = AlarmPolicy(hold_ratio=0.7, clear_after=3, accept_after_s=None)
    state = AlarmState()
    scores = [0.8, 0.6, 0.55, 0.5]
    out = [state.update(s, 0.7, i, p, normal=0.5) for i, s in enumerate(scores)]
    assert out == [RAISED, NONE, NONE, CLEARED]


def test_peak_and_restore() -> None:
    state = AlarmState()
    p = AlarmPolicy(clear_after=2, accept_after_s=None)
    for i, s in enumerate([1.2, 3.0, 0.1]):
        state.update(s, 1.0, i, p)
    assert state.active and state.peak == 3.0 and state.raised_ts == 0.0
    restored = AlarmState()
    restored.raise_at(123.0)  # an alarm open before a restart
    assert restored.active and restored.update(0.1, 1.0, 124.0, p) == NONE and restored.update(0.1, 1.0, 125.0, p) == CLEARED


def test_policy_from_config_and_bad_values() -> None:
    cfg = AgentConfig.model_validate({"alarms": {"hold_ratio": 0.5, "clear_after": 4, "accept_after_s": None}})
    assert AlarmPolicy.from_config(cfg.alarms) == AlarmPolicy(0.5, 4, None, 1000)
    assert AlarmPolicy.from_config(AgentConfig().alarms) == AlarmPolicy(0.7, 10, 7 * 86400.0, 1000)
    with pytest.raises(ValueError, match="hold_ratio"):
        AlarmPolicy(hold_ratio=0.0)
    with pytest.raises(ValueError):
        AgentConfig.model_validate({"alarms": {"hold_ratio": 1.5}})


def test_runnable_examples() -> None:
    import doctest

    from edge_agent import alarm_message, alarm_state

    for module in (alarm_state, alarm_message):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
