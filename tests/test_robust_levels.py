"""Operating levels accepted by a rebaseline (docs/detectors.md, "Setpoints an operator
accepted"): a controller moved between setpoints is alarmed at each level's first visit, and
once the operator has accepted a level, a move back to it is normal."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
from helpers import robust_with_operator

from edge_agent.detectors.robust import RobustDetector
from edge_agent.pipeline import Pipeline

T0 = 1.7e9
# (start, level): 45 for the fit and after, then the operator's setpoints
VISITS = [(0, 45.0), (800, 60.0), (1200, 30.0), (1600, 45.0), (1900, 60.0), (2150, 30.0), (2500, 60.0), (2800, 45.0)]


def setpoints(seed: int, visits: list[tuple[int, float]], n: int) -> np.ndarray:
    x = np.empty(n)
    for (start, level), (end, _) in zip(visits, [*visits[1:], (n, 0.0)], strict=True):
        x[start:end] = level
    return x + np.random.default_rng(seed).normal(0.0, 0.2, n)


def run(x: np.ndarray, accept_after: int | None) -> tuple[list[tuple[int, str, str | None]], Pipeline]:
    """x one reading a minute; with ``accept_after``, the operator accepts each alarm then."""
    return robust_with_operator(x, accept_after, 60.0, T0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_moves_between_accepted_setpoints_raise_nothing_and_a_new_one_is_alarmed(seed: int) -> None:
    n = 3120  # (75's alarm is 20 readings old at the end: not yet accepted)
    x = setpoints(seed, [*VISITS, (3100, 75.0)], n)
    events, pipe = run(x, accept_after=30)
    raised = [i for i, state, _ in events if state == "raised"]
    # 60 and 30 alarmed once each, on their first visit, and accepted; every later move between
    # 45, 60 and 30 is normal; 75, not accepted, is alarmed and held
    assert [i // 100 for i in raised] == [8, 12, 31], events
    assert events[-1][:2] == (raised[-1], "raised")
    d = pipe.series["s"].model.detector
    assert sorted(round(v) for v in d.levels) == [30, 45, 60]
    # ... and each of the five moves to an accepted level was said, though none was alarmed
    assert pipe.n_notices == 5 and d.notice is None


def test_a_move_to_an_accepted_level_is_a_notice_naming_both_levels() -> None:
    d = RobustDetector()
    rng = np.random.default_rng(5)
    d.fit(45.0 + rng.normal(0.0, 0.2, 500), T0 + 60.0 * np.arange(500))
    for v in (60.0 + rng.normal(0.0, 0.2, 40)).tolist():
        d.score_one(v)
    d.rebaseline()
    assert d.notice is None  # accepting is the operator's act, not news
    for v in (60.0 + rng.normal(0.0, 0.2, 20)).tolist():
        d.score_one(v)
    assert d.notice is None
    assert d.score_one(45.1) < d.threshold
    assert d.notice is not None and "an operating level a rebaseline accepted" in d.notice, d.notice
    left, to = re.match(r"moved from (\S+) to (\S+),", d.notice).groups()
    assert abs(float(left) - 60.0) < 0.5 and abs(float(to) - 45.0) < 0.5


def test_without_a_rebaseline_nothing_is_remembered_and_every_move_alarms() -> None:
    x = setpoints(1, VISITS, 3100)
    events, pipe = run(x, accept_after=None)
    assert pipe.series["s"].model.detector.levels == []
    assert pipe.n_notices == 0
    # each move away from 45 is alarmed and held while the series is away (every level but 45
    # is a fault to a model never told otherwise), cleared after the return to 45
    assert [(i // 100, state) for i, state, _ in events] == [(8, "raised"), (17, "cleared"), (19, "raised"), (29, "cleared")], events


def test_levels_are_saved_loaded_checked_and_forgotten_by_a_fit() -> None:
    x = setpoints(4, [(0, 45.0)], 600)
    d = RobustDetector()
    d.fit(x[:500], T0 + 60.0 * np.arange(500))
    assert d.levels == []
    for v in (60.0 + np.random.default_rng(5).normal(0.0, 0.2, 40)).tolist():
        d.score_one(v)
    d.rebaseline()
    assert len(d.levels) == 2 and abs(d.levels[0] - 60.0) < 0.5 and abs(d.levels[1] - 45.0) < 0.5
    params, arrays = d.get_state()
    again = RobustDetector.from_state(params, arrays)
    assert again.levels == d.levels
    old = {k: v for k, v in params.items() if k != "levels"}  # a model stored before them
    assert RobustDetector.from_state(old, arrays).levels == []
    for bad in ([1.0] * 5, [float("nan")], "45"):
        with pytest.raises(ValueError, match="levels"):
            RobustDetector.from_state({**params, "levels": bad}, arrays)
    d.fit(x[:500], T0 + 60.0 * np.arange(500))
    assert d.levels == []


@pytest.mark.parametrize("seed", [6, 7])
def test_a_window_that_held_the_setpoints_makes_moves_between_them_normal(seed: int) -> None:
    # The training window already moved between 60, 30 and 45: its spike tail learned those
    # jumps as routine, and before the window's levels were kept the level channel raised at
    # the later moves, held each for hundreds of readings (4 raises here on d89d7c0; the
    # setpoints of plant_normals_probe.py, seed 2: 20). A level far beyond them still raises.
    visits = [(0, 60.0), (159, 30.0), (387, 45.0), (484, 30.0), (1466, 60.0), (2099, 45.0), (2296, 60.0), (2784, 30.0),
              (3252, 45.0), (3600, 60.0), (3900, 120.0)]
    x = setpoints(seed, visits, 4000)
    events, pipe = run(x, accept_after=None)
    d = pipe.series["s"].model.detector
    assert sorted(round(v) for v in d.levels) == [30, 45, 60] and d.lv_win == 1
    assert events == [(3900, "raised", "spike")], events


@pytest.mark.parametrize("beyond", [75.0, 90.0])
def test_a_new_level_just_beyond_the_windows_setpoints_is_raised_and_held(beyond: float) -> None:
    # Fitted as it came, the window's two moves were its noise: a step to 75 raised nothing on
    # d89d7c0, one to 90 was raised and let go in 12 readings while it lasted. Fitted on the
    # noise about its setpoints, the step is one; the moves between them stay normal.
    visits = [(0, 30.0), (150, 45.0), (320, 60.0), (600, 30.0), (900, 45.0), (1150, 60.0), (1500, 30.0),
              (1800, 60.0), (2100, 45.0), (2400, beyond)]
    events, _ = run(setpoints(6, visits, 2700), accept_after=None)
    assert events == [(2400, "raised", "spike")], events  # raised at once, and held to the end


@pytest.mark.parametrize(
    ("name", "make", "band"),
    [  # (band: 4 noise scales, the detector's own at fit)
        ("white noise", lambda r: r.normal(50.0, 1.0, 500), 4.0),
        ("a wander", lambda r: 50.0 + np.cumsum(r.normal(0.0, 0.3, 500)) + r.normal(0.0, 1.0, 500), 4.0),
        ("a slow ramp", lambda r: np.linspace(40.0, 60.0, 500) + r.normal(0.0, 1.0, 500), 4.0),
        ("flips between two values every reading or two", lambda r: np.where(r.random(500) < 0.5, 30.0, 60.0) + r.normal(0.0, 0.2, 500), 0.8),
        ("five setpoints", lambda r: np.repeat([10.0, 30.0, 50.0, 70.0, 90.0], 100) + r.normal(0.0, 0.2, 500), 0.8),
        ("a level with one excursion of 10 readings", lambda r: np.r_[np.full(245, 50.0), np.full(10, 80.0), np.full(245, 50.0)] + r.normal(0.0, 0.2, 500), 0.8),
    ],
)
def test_a_window_without_a_few_held_levels_has_none(name: str, make: Callable[[np.random.Generator], np.ndarray], band: float) -> None:
    from edge_agent.detectors.robust_stats import operating_levels

    assert operating_levels(make(np.random.default_rng(7)), band) == [], name


def test_operating_levels_of_three_held_setpoints() -> None:
    from edge_agent.detectors.robust_stats import operating_levels

    x = np.repeat([30.0, 45.0, 60.0, 45.0], 125) + np.random.default_rng(8).normal(0.0, 0.2, 500)
    x[125] = 37.0  # a reading in transit between two levels
    levels = operating_levels(x, 0.8)
    assert [round(v, 1) for v in levels] == [30.0, 45.0, 60.0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_ramped_move_accepted_soon_after_its_raise_is_not_raised_again(seed: int) -> None:
    # A load moved over 24 readings (a schedule ramping a setpoint), accepted 30 readings after
    # its raise: the episode's mean still held the ramp, the model of normal was put there,
    # and the level the operator had just accepted was raised again within a few readings.
    x = 45.0 + np.random.default_rng(seed).normal(0.0, 0.2, 2000)
    x[800:824] += np.linspace(0.0, 15.0, 24)
    x[824:] += 15.0
    events, _ = run(x, accept_after=30)
    assert [state for _, state, _ in events] == ["raised", "accepted"], events
