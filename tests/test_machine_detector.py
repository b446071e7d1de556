"""The machine detector (``baseline_t2``): its statistics, its gate, its relations, its state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent import machine_detectors
from edge_agent.machine_detectors.baseline_t2 import BaselineT2Detector
from edge_agent.machine_detectors.estimates import chi2_sf, t2_limit
from edge_agent.machines import message
from edge_agent.model_store import ModelStore

SENSORS = ["a", "b", "c"]


def _rows(n: int, seed: int = 1, drift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, 3)) + [10.0, 20.0, 30.0]
    if drift:
        x[:, 2] += np.cumsum(rng.normal(0.0, drift, n))
    return x


def _fitted(n: int = 400, **params: float) -> tuple[BaselineT2Detector, np.ndarray]:
    rows = _rows(n + 2000, drift=params.pop("drift", 0.0))
    d = BaselineT2Detector(**params)
    d.fit(rows[:n], np.arange(float(n)), SENSORS)
    return d, rows[n:]


def test_t2_limit_matches_the_single_sensor_test() -> None:
    # One sensor: T² is z², so the joint limit is k itself.
    assert t2_limit(5.0, 1) == pytest.approx(5.0, rel=1e-6)
    # Two: P(chi2_2 > x) = exp(-x / 2), and the single test's false-alarm probability.
    p_single = 1 - (1 - math.erfc(5 / math.sqrt(2))) ** 2
    assert math.exp(-t2_limit(5.0, 2) ** 2 / 2) == pytest.approx(p_single, rel=1e-6)
    mpmath = pytest.importorskip("mpmath")  # an independent implementation of the same function
    for x, dof in ((7.0, 3), (7.0, 1), (20.0, 5), (40.0, 8), (3.0, 7), (60.0, 16)):
        assert chi2_sf(x, dof) == pytest.approx(float(mpmath.gammainc(dof / 2, x / 2, mpmath.inf, regularized=True)), rel=1e-9)
    assert t2_limit(5.0, 8) > t2_limit(5.0, 2) > 5.0


def test_normal_rows_stay_quiet_and_a_step_is_held_until_accepted() -> None:
    # 2000 fit rows: from 400 rows of pure noise the variogram may read a small drift by
    # chance, and the baseline would then let go of the step sooner (see the next test).
    d, rest = _fitted(n=2000, hold_s=120.0)
    scores = [d.score_row(r, 1.0) for r in rest[:1000].tolist()]
    assert max(scores) < d.threshold
    # A step of 3 sd in sensor b: anomalous, held while it lasts (the gate keeps b's
    # baseline where it was), then accepted as the new normal after hold_s.
    stepped = rest[1000:1400].copy()
    stepped[:, 1] += 3.0
    scores, named = [], []
    for r in stepped.tolist():
        scores.append(d.score_row(r, 1.0))
        if scores[-1] >= 1.0 and not named:
            named = d.contributions()
    first = next(i for i, s in enumerate(scores) if s >= 1.0)
    assert first < 15  # ~10 s of smoothing
    assert named[0].sensor == "b" and named[0].z > 0 and named[0].value > named[0].expected
    over = [i for i, s in enumerate(scores) if s >= 1.0]
    assert over[-1] - first >= 100  # held for (about) hold_s
    assert all(s < 1.0 for s in scores[first + 130:])  # accepted: quiet again


def test_a_drifting_sensor_lets_go_of_a_frozen_baseline_sooner() -> None:
    """The gate freezes a deviating sensor's baseline, but its uncertainty grows at the rate
    the sensor drifted in the fit rows: a drifting sensor's deviation loses significance in
    seconds-to-minutes, a stationary one's is held (up to hold_s)."""
    held = {}
    for drift in (0.0, 0.5):
        d, rest = _fitted(n=2000, drift=drift)
        for r in rest[:300].tolist():
            d.score_row(r, 1.0)
        stepped = rest[300:900].copy()
        stepped[:, 2] += 8.0
        scores = [d.score_row(r, 1.0) for r in stepped.tolist()]
        held[drift] = sum(1 for s in scores if s >= 1.0)
    assert held[0.0] >= 500  # stationary: held up to hold_s (600)
    assert held[0.5] < held[0.0] / 3


def test_a_broken_relation_is_found_and_the_sensors_named() -> None:
    rng = np.random.default_rng(3)
    load = np.zeros(1200)
    for i in range(1, 1200):
        load[i] = 0.95 * load[i - 1] + rng.normal(0, 0.05)
    rows = np.column_stack([100 + 10 * load + rng.normal(0, 0.1, 1200), 20 + 3 * load + rng.normal(0, 0.05, 1200), rng.normal(50, 1, 1200)])
    d = BaselineT2Detector()
    stats = d.fit(rows[:400], np.arange(400.0), ["flow", "current", "temp"])
    assert set(stats["relations"]) == {"flow", "current"}  # temp relates to nothing
    assert max(d.score_row(r, 1.0) for r in rows[400:1000].tolist()) < 1.0
    # current rises as flow falls, each well inside its normal band
    broken = rows[1000:1100] + [-1.5, 0.5, 0.0]
    assert broken[:, 0].min() > rows[:1000, 0].min() and broken[:, 1].max() < rows[:1000, 1].max()
    scores = [d.score_row(r, 1.0) for r in broken.tolist()]
    assert sum(s >= 1.0 for s in scores) > 80  # found, and held while the relation stays broken
    named = [(c.sensor, c.z > 0) for c in d.contributions()[:2]]
    assert sorted(named) == [("current", True), ("flow", False)]
    flow = next(c for c in d.contributions() if c.sensor == "flow")
    assert flow.expected > flow.value  # the others say flow should be higher
    # The same move *with* the relation (both up with the load) is normal.
    d2 = BaselineT2Detector()
    d2.fit(rows[:400], np.arange(400.0), ["flow", "current", "temp"])
    for r in rows[400:1000].tolist():
        d2.score_row(r, 1.0)
    with_load = rows[1000:1100] + [1.5, 0.45, 0.0]
    assert sum(d2.score_row(r, 1.0) >= 1.0 for r in with_load.tolist()) < 5


def test_state_round_trips_through_the_model_store(tmp_path) -> None:
    d, rest = _fitted()
    for r in rest[:50].tolist():
        d.score_row(r, 1.0)
    store = ModelStore(tmp_path, fsync=False, registry=machine_detectors.detector_class)
    store.save("line1/pump-7", d, n_samples=400)
    copy = store.load_active("line1/pump-7")[0].detector
    assert isinstance(copy, BaselineT2Detector) and copy.sensors == SENSORS
    for r in rest[50:300].tolist():
        assert copy.score_row(r, 1.0) == d.score_row(r, 1.0)
    assert [c.as_dict() for c in copy.contributions()] == [c.as_dict() for c in d.contributions()]


@pytest.mark.parametrize("damage", ["shape", "nan", "zero_noise", "cinv", "sensors"])
def test_from_state_refuses_damaged_state(damage: str) -> None:
    d, _ = _fitted()
    params, arrays = d.get_state()
    if damage == "shape":
        arrays["m"] = arrays["m"][:2]
    elif damage == "nan":
        arrays["e"][0] = math.nan
    elif damage == "zero_noise":
        arrays["r"][1] = 0.0
    elif damage == "cinv":
        arrays["cinv"] = np.eye(2)
    else:
        params["sensors"] = "abc"
    with pytest.raises(ValueError):
        BaselineT2Detector.from_state(params, arrays)


def test_bad_params_and_rows_are_refused_with_their_name() -> None:
    with pytest.raises(ValueError, match="tau_s"):
        BaselineT2Detector(tau_s=0)
    with pytest.raises(TypeError, match="nope"):
        machine_detectors.create("baseline_t2", {"nope": 1})
    with pytest.raises(ValueError, match="unknown machine detector"):
        machine_detectors.create("adaptive")
    d = BaselineT2Detector()
    with pytest.raises(ValueError, match="at least"):
        d.fit(_rows(20), np.arange(20.0), SENSORS)
    with pytest.raises(ValueError, match="finite"):
        bad = _rows(400)
        bad[5, 1] = math.nan
        d.fit(bad, np.arange(400.0), SENSORS)
    d.fit(_rows(400), np.arange(400.0), SENSORS)
    with pytest.raises(ValueError, match="3 sensors"):
        d.score_row([1.0, 2.0], 1.0)


def _wandering(n: int, seed: int) -> np.ndarray:
    """Three sensors that wander around a level (an AR(1) over ~10 rows plus noise), as the
    SKAB bench's vibration, current and flow do: their variogram reads a drift at short lags,
    so each level baseline follows them within ~10 s, and follows a ramp as well."""
    rng = np.random.default_rng(seed)
    ar = np.zeros((n, 3))
    for i in range(1, n):
        ar[i] = 0.9 * ar[i - 1] + rng.normal(0.0, 0.44, 3)
    return 0.6 * ar + 0.8 * rng.normal(0.0, 1.0, (n, 3)) + [10.0, 20.0, 30.0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_ramp_fast_for_the_sensor_is_raised_named_and_held(seed: int) -> None:
    """The blind spot of a drift-following baseline: a ramp to 12 sd over 120 s, then held.
    The level channel alone follows it (no alarm: checked with ``rate_tau_s=0``); the rate
    channel sees a slope ~8x the sensor's normal one, names it "rising fast", and holds the
    sensor's level baseline so the plateau stays in alarm."""
    x = _wandering(1800, seed)
    ramp = x[1400:1800].copy()
    ramp[:, 1] += 12.0 * x[:400, 1].std() * np.minimum(np.arange(400) / 120.0, 1.0)
    result = {}
    for rate_tau_s in (60.0, 0.0):
        d = BaselineT2Detector(rate_tau_s=rate_tau_s)
        stats = d.fit(x[:400], np.arange(400.0), SENSORS)
        assert max(d.score_row(r, 1.0) for r in x[400:1400].tolist()) < 0.6  # quiet before
        scores, named = [], []
        for r in ramp.tolist():
            scores.append(d.score_row(r, 1.0))
            if scores[-1] >= 1.0 and not named:
                named = d.contributions()
        result[rate_tau_s] = (scores, named, stats)
    assert max(result[0.0][0]) < 1.0  # without the rate channel: missed
    scores, named, stats = result[60.0]
    first = next(i for i, s in enumerate(scores) if s >= 1.0)
    assert first <= 120  # found while it ramps
    assert (named[0].sensor, named[0].what) == ("b", "rising fast")
    assert message.raised(named, 1.2, 1.0).startswith("b rising fast: b ")
    assert all(s >= 0.7 for s in scores[first:])  # held (hold_ratio 0.7) over the plateau
    assert all(v["rate_sd_per_s"] > 0 for v in stats["sensors"].values())


def test_a_sensor_whose_level_keeps_moving_has_no_rate_channel() -> None:
    """A temperature that warms and cools with the load: its fit rows show it moving further
    in a minute than in 10 s (variance ratio far above 1), so they cannot say how fast it
    normally moves: no rate channel for it; the settled sensors keep theirs."""
    x = _wandering(1000, 4)
    t = np.arange(1000.0)
    x[:, 2] = 30.0 + 3.0 * np.sin(2 * np.pi * t / 900.0) + np.random.default_rng(5).normal(0.0, 0.05, 1000)
    d = BaselineT2Detector()
    stats = d.fit(x[:400], t[:400], SENSORS)
    assert stats["sensors"]["c"]["rate_sd_per_s"] is None and stats["sensors"]["c"]["rate_variance_ratio"] is None
    assert stats["sensors"]["a"]["rate_sd_per_s"] > 0 and stats["sensors"]["a"]["rate_variance_ratio"] < 2.1
    # Its normal warming does not alarm.
    assert max(d.score_row(r, 1.0) for r in x[400:].tolist()) < 1.0


def test_a_model_stored_before_the_rate_channels_loads_without_them() -> None:
    """Old format: no ``rate_tau_s`` param, no fast/slow/rate_sd arrays. It loads and scores
    exactly as it did (the rate channels come with the next fit)."""
    old, rest = _fitted(rate_tau_s=0.0)
    params, arrays = old.get_state()
    del params["rate_tau_s"]
    assert not {"fast", "slow", "rate_sd"} & set(arrays)
    loaded = BaselineT2Detector.from_state(params, arrays)
    assert loaded.rate_tau_s == 0.0
    for r in rest[:200].tolist():
        assert loaded.score_row(r, 1.0) == old.score_row(r, 1.0)
    assert set(loaded.live_state()) == {"m", "pv", "e", "held"}
    # A current model refuses state without its rate arrays.
    new, _ = _fitted()
    params, arrays = new.get_state()
    del arrays["rate_sd"]
    with pytest.raises(ValueError, match="rate_sd"):
        BaselineT2Detector.from_state(params, arrays)


def test_a_long_gap_does_not_look_like_a_fast_move() -> None:
    """After a day without rows (an agent stopped, a machine off), longer than ``hold_s``, the
    level the sensors come back at is where the machine is: no alarm on the rows after it.
    (Before: the first row re-synced the baselines, but the smoothed deviation kept the jump
    and the second row scored 2.4 x threshold, "b high".)"""
    x = _wandering(1400, 6)
    d = BaselineT2Detector()
    d.fit(x[:400], np.arange(400.0), SENSORS)
    for r in x[400:1000].tolist():
        d.score_row(r, 1.0)
    moved = x[1000:1060] + [0.0, 6.0 * x[:400, 1].std(), 0.0]  # another operating point
    scores = [d.score_row(moved[0].tolist(), 86400.0)] + [d.score_row(r, 1.0) for r in moved[1:].tolist()]
    assert max(scores) < 1.0, scores[:5]
