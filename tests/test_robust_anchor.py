"""The anchor channel of ``robust`` (docs/detectors.md, "An anchor the scoring cannot move"):
where the fit left normal, judged against the live level within what the window's variogram
says normal operation can reach; moved only by a rebaseline or a fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import robust_alarm_events, robust_with_operator

from edge_agent.detectors import robust_stats
from edge_agent.detectors.robust import RobustDetector
from edge_agent.detectors.robust_stats import _walk_gram, anchor_reach, slope_allowance

T0 = 1.7e9


def slow_ramp(seed: int) -> np.ndarray:
    """White noise (sd 1) read once a minute, 500 readings to fit, 400 normal, then a ramp of
    0.01 sd a reading for 3,000 readings (30 sd in all, slower than the model of normal learns
    it), then 600 back at normal."""
    x = 20.0 + np.random.default_rng(seed).normal(0.0, 1.0, 4500)
    x[900:3900] += 0.01 * np.arange(1, 3001)
    return x


def anchor_score(d: RobustDetector) -> float:
    """The anchor channel's score on the last reading (1.0: at its bound)."""
    return abs(d.a_x - d.a_level) * d.a_inv


def events(values: np.ndarray, dt: float = 60.0) -> list[tuple[int, str, str | None, str]]:
    return robust_alarm_events(values, dt, T0)


def test_a_ramp_slower_than_the_model_of_normal_learns_is_raised_while_it_lasts() -> None:
    # Without the anchor the model of normal, its spreads and its tails learn this ramp as it
    # comes: nothing is raised until the jump back at 3900 (a spike). The anchor, which nothing
    # scored can move, sees the level leave what white noise's level can reach.
    ev = events(slow_ramp(1))
    raised = [(i, k, m) for i, s, k, m in ev if s == "raised"]
    assert raised and 900 < raised[0][0] < 3900, raised
    i, kind, message = raised[0]
    assert kind == "drift" and "from where the fit left normal" in message
    assert not [e for e in ev if i < e[0] < 3900]  # held while the ramp lasts


def test_rebaseline_moves_the_anchor_and_only_it() -> None:
    x = slow_ramp(1)
    t = T0 + 60.0 * np.arange(x.shape[0])
    d = RobustDetector()
    d.fit(x[:500], t[:500])
    level = d.a_level
    scores = [d.score_one(float(v), float(ts)) for v, ts in zip(x[500:3900], t[500:3900], strict=True)]
    assert max(scores) >= 1.0 and anchor_score(d) >= 1.0 and d.a_level == level  # scoring did not move it
    d.rebaseline()
    assert d.a_level == d.a_x and d.a_t == 0 and anchor_score(d) == 0.0
    held = np.full(300, float(x[3899]))  # the ramp's end, held: now normal for the anchor
    held += np.random.default_rng(2).normal(0.0, 1.0, 300)
    for v, ts in zip(held, t[3900:4200], strict=True):
        d.score_one(float(v), float(ts))
        assert anchor_score(d) < d.learn_below


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_setpoint_accepted_soon_after_its_step_is_not_raised_again(seed: int) -> None:
    # An operator moves a controller to a new setpoint (a step of 75 noise widths), sees the
    # alarm and accepts the level with `rebaseline` 30 readings later. The anchor's live level
    # follows readings Huber-limited, so it was still halfway up the step then: anchored
    # there, it walked on to the accepted level and re-raised it ~40 readings later, at every
    # rebaseline again (plant_normals_probe.py's setpoints, seed 1: three raises on one level).
    rng = np.random.default_rng(seed)
    x = 45.0 + rng.normal(0.0, 0.2, 2500)
    x[800:] += 15.0
    events, pipe = robust_with_operator(x, accept_after=30, t0=T0)  # the step raises at 800, accepted at 830
    assert [(i, state) for i, state, _ in events] == [(800, "raised"), (830, "accepted")], events
    d = pipe.series["s"].model.detector
    assert abs(d.a_level - 60.0) < 0.5 and anchor_score(d) < d.learn_below


def test_the_bound_holds_a_young_wander_and_a_stationary_one() -> None:
    # The channel's cost: a wander whose window shows mostly its noise (the suite's at one reading
    # a second: a one-hour correlation time, 500 readings) and a stationary one (a minute apart)
    # must stay within the bound over 12,000 readings.
    for dt, seed in ((1.0, 3), (60.0, 4)):
        rng = np.random.default_rng(seed)
        phi = math.exp(-dt / 3600.0)
        w = np.empty(12500)
        w[0] = rng.normal(0.0, 1.5)
        e = rng.normal(0.0, 1.5 * math.sqrt(1.0 - phi * phi), 12500)
        for i in range(1, 12500):
            w[i] = phi * w[i - 1] + e[i]
        x = 50.0 + w + rng.normal(0.0, 0.5, 12500)
        t = T0 + dt * np.arange(12500)
        d = RobustDetector()
        d.fit(x[:500], t[:500])
        assert d.a_inv > 0.0  # on
        worst = 0.0
        for v, ts in zip(x[500:], t[500:], strict=True):
            d.score_one(float(v), float(ts))
            worst = max(worst, anchor_score(d))
        assert worst < 1.0, (dt, worst)


def test_the_walks_detrended_variogram_is_what_random_walks_show() -> None:
    rng = np.random.default_rng(0)
    n, lags = 400, (12, 25, 50, 200)
    sims = []
    for _ in range(400):
        x = np.cumsum(rng.normal(0.0, 1.0, n))
        tt = np.arange(n, dtype=np.float64)
        b, a = np.polyfit(tt, x, 1)
        r = x - a - b * tt
        sims.append([np.mean((r[h:] - r[:-h]) ** 2) for h in lags])
    expected = _walk_gram(n, lags)
    np.testing.assert_allclose(np.mean(sims, axis=0), expected, rtol=0.1)
    assert expected[-1] < 0.5 * lags[-1]  # the line takes up most of a walk's longer lags


def test_anchor_reach_levels_off_on_a_stationary_window_grows_on_a_walk_and_is_off_on_a_curve() -> None:
    rng = np.random.default_rng(5)
    t = 2000.0
    covered = []
    for _ in range(100):  # a random walk of rate 0.01 with white noise: the bound covers its variance
        x = np.cumsum(rng.normal(0.0, 0.1, 500)) + rng.normal(0.0, 1.0, 500)
        reach = anchor_reach(x)
        if reach is not None:
            v_k, g_k, rate, se2 = reach
            covered.append((v_k + rate * (t - g_k) + se2 * t * t) / (0.01 * t + 2.0))
    # (the rate is the smaller of two estimates, low by ~half at the median: the bound on the
    # variance itself falls short on ~1 window in 5 (1 in 8 while a stationary series' slope
    # variance was allowed for on every window: slope_allowance), never by more than the
    # channel's z² / 9, its threshold being z >= 5.26 of those standard deviations)
    assert len(covered) >= 95 and np.mean(np.asarray(covered) >= 1.0) >= 0.8 and min(covered) > 1.0 / 3.0
    # The diffusion's share of the window's variogram at lag k (rate x g_k / v_k): a stationary
    # AR(1) (a 20-reading correlation time) shows none beyond the floor of what the window could
    # hide (0.147 at 500 readings); a random walk (1 a step, noise 1) shows it, at about half its
    # true share (~1).
    phi = math.exp(-1.0 / 20.0)
    share_ar, share_walk = [], []
    for _ in range(50):
        w = np.zeros(500)
        e = rng.normal(0.0, math.sqrt(1.0 - phi * phi), 500)
        for i in range(1, 500):
            w[i] = phi * w[i - 1] + e[i]
        for x, out in ((w + rng.normal(0.0, 0.3, 500), share_ar), (np.cumsum(rng.normal(0.0, 1.0, 500)) + rng.normal(0.0, 1.0, 500), share_walk)):
            reach = anchor_reach(x)
            if reach is None:  # (a walk's window can be a curve: off; a stationary one's is not)
                assert out is share_walk
                continue
            v_k, g_k, rate, _ = reach
            out.append(rate * g_k / v_k)
    # (one window's estimate of a walk's rate is noisy: the raw chord over lags k / 2 to k rests on
    # ~2 independent stretches, and the smaller of the two estimates is taken)
    assert len(share_walk) >= 25 and np.percentile(share_ar, 90) < 0.2 < np.median(share_walk)
    assert np.mean(share_walk) > 1.5 * np.mean(share_ar)
    # half a cycle in the window: a curve the anchor cannot extrapolate
    off = [anchor_reach(20.0 + 3.0 * np.sin(np.linspace(0.0, math.pi, 500)) + rng.normal(0.0, 0.3, 500)) is None for _ in range(20)]
    assert all(off)


def test_the_boiling_frog_is_raised_while_its_ramp_lasts() -> None:
    # The suite's own frog (seed 0, `quantised/drift/s0.5/dt60/r1`): a quantised wander around 50
    # (sd 1.5, a 60-reading correlation time, 8 of them in the window) ramps 50 -> 95 over readings
    # 800-1099. On 00c07ba nothing was raised until the jump back (a spike at 1100): the bound
    # also allowed for a slope the window did not show (its variance from a window 8 correlation
    # times long, over 600 readings, was most of the bound), and the live level reached 0.99 of it.
    from edge_agent.evaluation.scenarios import build_suite

    sc = next(s for s in build_suite("full", seed=0) if s.name == "quantised/drift/s0.5/dt60/r1")
    (fault,) = sc.faults
    # The suite adds its ramp to the rounded readings, so its steps leave the lattice, which the
    # lattice count (lattice.py) raises at once; read through the transmitter, a ramp stays on
    # its quantum of 1 (twice the noise), and it is the anchor's to see.
    ev = events(np.round(sc.values))
    raised = [(i, k, m) for i, s, k, m in ev if s == "raised"]
    assert raised and fault.start < raised[0][0] <= fault.end, raised
    i, kind, message = raised[0]
    assert kind == "drift" and "from where the fit left normal" in message
    assert not [e for e in ev if i < e[0] <= fault.end]  # held while the ramp lasts


def test_the_stationary_slope_variance_is_allowed_for_only_where_the_window_shows_a_slope(monkeypatch: pytest.MonkeyPatch) -> None:
    # The rule: the slope's square and a walk's slope variance always; a stationary series' slope
    # variance only beyond YOUNG_Z of the slope's standard error.
    assert slope_allowance(0.001, 1e-6, 1e-5) == 0.001**2 + 1e-6
    assert slope_allowance(-0.01, 1e-6, 1e-5) == 0.01**2 + 1e-6 + 1e-5
    # What anchor_reach hands it: on a stationary wander's window (AR(1), a 20-reading correlation
    # time, no trend) the slope is within its error in about 9 windows in 10 (YOUNG_Z's one-sided
    # 95 %, on a two-sided slope); a trend on white noise (0.013 noise widths a reading) shows it.
    shown: list[bool] = []

    def observed(slope: float, walk_var: float, still_var: float) -> float:
        shown.append(slope * slope > robust_stats.YOUNG_Z**2 * (walk_var + still_var))
        return slope_allowance(slope, walk_var, still_var)

    monkeypatch.setattr(robust_stats, "slope_allowance", observed)
    rng = np.random.default_rng(11)
    phi = math.exp(-1.0 / 20.0)
    for _ in range(40):
        w = np.zeros(500)
        e = rng.normal(0.0, math.sqrt(1.0 - phi * phi), 500)
        for i in range(1, 500):
            w[i] = phi * w[i - 1] + e[i]
        assert anchor_reach(w + rng.normal(0.0, 0.3, 500)) is not None
    assert len(shown) == 40 and sum(shown) <= 6, sum(shown)
    shown.clear()
    tt = np.arange(500, dtype=np.float64)
    for _ in range(20):
        assert anchor_reach(0.004 * tt + rng.normal(0.0, 0.3, 500)) is not None
    assert len(shown) == 20 and all(shown)


def test_a_model_stored_before_the_anchor_loads_with_it_off_and_the_new_state_round_trips() -> None:
    x = slow_ramp(1)
    t = T0 + 60.0 * np.arange(x.shape[0])
    d = RobustDetector()
    d.fit(x[:500], t[:500])
    d.score_many(x[500:1003], t[500:1003])  # (mid-way between two refreshes of the bound)
    params, arrays = d.get_state()
    again = RobustDetector.from_state(json.loads(json.dumps(params)), arrays)
    np.testing.assert_array_equal(again.score_many(x[1003:], t[1003:]), d.score_many(x[1003:], t[1003:]))
    for added in ("a_level", "a_x", "a_vk", "a_k", "a_rate", "a_se2", "a_c", "a_s", "a_t", "a_inv", "a_next"):
        del params[added]
    old = RobustDetector.from_state(json.loads(json.dumps(params)), arrays)
    assert old.a_inv == 0.0  # off, as it was
    assert np.isfinite(old.score_many(x[1003:], t[1003:])).all()


def tank(seed: int, n: int) -> np.ndarray:
    """A tank filling from 20 to 80 over 100-300 readings and draining over 10-30, noise 0.3
    (scripts/plant_normals_probe.py's sawtooth, its seeds)."""
    rng = np.random.default_rng([seed, 7])
    parts: list[np.ndarray] = []
    while sum(p.size for p in parts) < n:
        parts += [np.linspace(20, 80, int(rng.uniform(100, 300))), np.linspace(80, 20, int(rng.uniform(10, 30)))]
    return np.concatenate(parts)[:n] + rng.normal(0.0, 0.3, n)


def test_a_window_whose_variogram_has_a_hole_at_its_lag_is_bounded_by_its_sill() -> None:
    # Readings 250 apart in a cycle of about 250 (a tank's fill and drain) are alike: the
    # variogram at the anchor's lag (k = 250) is a hole, not the level staying put. The bound
    # is the window's sill.
    v = tank(1, 500)
    t = np.arange(500.0)
    r = v - np.polyval(np.polyfit(t, v, 1), t)
    at_k = float(np.mean((r[250:] - r[:-250]) ** 2))
    sill = 2.0 * float(np.var(r))
    assert at_k < robust_stats._HOLE * sill
    reach = anchor_reach(v)
    assert reach is not None and reach[0] == pytest.approx(sill)
    # ... and a window without one keeps its variogram at k (white noise: about its sill)
    w = np.random.default_rng(2).normal(0.0, 1.0, 500)
    assert anchor_reach(w)[0] == pytest.approx(float(np.mean((w[250:] - w[:-250]) ** 2)), rel=0.05)


def test_a_tank_cycle_accepted_at_its_top_does_not_raise_its_drains() -> None:
    # This tank's training window holds about two cycles of ~250 readings: the variogram at the
    # anchor's lag is 1 / 13 of its sill. Taken as the bound, the anchor judged a third of the
    # cycle's range abnormal: it raised a fill as a drift, and an operator who accepted an
    # alarm at the top of the cycle re-anchored it there, so each drain was raised again (16
    # drift alarms over 12,500 readings).
    x = tank(1, 12_500)
    events, _ = robust_with_operator(x, accept_after=30, t0=T0)
    assert not [e for e in events if e[1] == "raised"], events
