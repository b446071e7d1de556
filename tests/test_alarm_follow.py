"""A ramped move an operator accepted is followed while it goes on (alarm_follow.py): one alarm
for the ramp, not one after each acceptance; a spike meanwhile, and a move back afterwards,
are alarmed as usual."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import robust_with_operator

from edge_agent.http.series_view import detail

RAMP = (700, 940)  # readings: a load ramped from 60 down to 40 over 4 hours (one reading a minute)
STEP_BACK = 1200  # ... then a step up to 50: a move the operator never accepted


def load_change(seed: int, spike_at: int | None = None) -> np.ndarray:
    n = 1400
    x = np.full(n, 60.0)
    x[RAMP[0]:RAMP[1]] = np.linspace(60.0, 40.0, RAMP[1] - RAMP[0])
    x[RAMP[1]:] = 40.0
    x[STEP_BACK:] = 50.0
    if spike_at is not None:
        x[spike_at] -= 8.0  # 16 noise widths, the ramp's own direction
    return x + np.random.default_rng(seed).normal(0.0, 0.5, n)


def raises(events: list[tuple[int, str, str | None]], lo: int, hi: int) -> list[tuple[int, str | None]]:
    return [(i, kind) for i, state, kind in events if state == "raised" and lo <= i < hi]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_accepted_ramp_raises_once_and_a_step_back_after_it_raises(seed: int) -> None:
    events, pipe = robust_with_operator(load_change(seed), accept_after=30)
    during = raises(events, RAMP[0], STEP_BACK)
    assert len(during) == 1 and during[0][1] in ("level_shift", "drift"), events
    assert pipe.n_followed >= 3, pipe.n_followed  # the ramp went on after the acceptance, and was followed
    # The levels the ramp passed through were not remembered as operating levels: the step
    # to 50 (halfway up the ramp) is a fault.
    assert raises(events, STEP_BACK, STEP_BACK + 20), events


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_without_following_each_acceptance_is_raised_again(seed: int) -> None:
    """follow_readings: 0, what the agent did before: the ramp raises again a few readings
    after each acceptance (the behaviour the following removes; this is what the test above
    would see without it)."""
    events, pipe = robust_with_operator(load_change(seed), accept_after=30, alarms={"follow_readings": 0})
    assert len(raises(events, RAMP[0], RAMP[1] + 50)) >= 4, events
    assert pipe.n_followed == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_spike_during_a_followed_ramp_is_alarmed(seed: int) -> None:
    events, _ = robust_with_operator(load_change(seed, spike_at=860), accept_after=30)
    assert (860, "spike") in raises(events, RAMP[0], STEP_BACK), events


def test_nobody_acting_the_ramp_alarm_is_held_not_followed() -> None:
    events, pipe = robust_with_operator(load_change(1), accept_after=None)
    assert [state for i, state, _ in events if i >= RAMP[0]] == ["raised"], events
    assert pipe.n_followed == 0


def test_the_series_view_says_what_is_followed_and_until_when() -> None:
    x = load_change(1)
    _, pipe = robust_with_operator(x[:800], accept_after=30)  # accepted at ~746, the ramp going on
    f = detail(pipe.series["s"])["alarm"]["following"]
    assert f is not None and f["direction"] == "down" and f["accepted_by"] == "the operator", f
    assert 800 < f["until_reading"] <= f["ends_at_reading"] <= 746 + 2_000 + 1, f
    # Ended: the ramp settled at 940, and no raise was followed in the 200 readings before 1199.
    _, pipe = robust_with_operator(x[:1199], accept_after=30)
    assert detail(pipe.series["s"])["alarm"]["following"] is None
