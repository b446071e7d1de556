"""The short-term predictor's rate, re-chosen from its own one-step errors once the series shows
more of itself than the fit's window did (robust_stats.rechoose_rate, RobustDetector._rechoose_rate)."""

from __future__ import annotations

import numpy as np

from edge_agent.detectors.robust import RobustDetector
from edge_agent.detectors.robust_stats import best_gain, rechoose_rate
from edge_agent.evaluation.scenarios import noise_over, normal_signal

T0 = 1.7e9


def _ewma_errors(x: np.ndarray, a: float) -> np.ndarray:
    level, out = float(x[0]), []
    for v in x[1:].tolist():
        e = v - level
        out.append(e)
        level += a * e
    return np.asarray(out)


def test_the_best_gain_is_read_from_the_errors_lag_one_autocorrelation() -> None:
    # A local level (a random walk plus white noise) whose best exponential gain is a*: a
    # predictor of gain a leaves errors whose lag-1 autocorrelation gives a* back. (On the side
    # the re-choice acts, a predictor slower than the best; far faster than the best, the
    # autocorrelation sits near its floor, -a / 2, and says little more than "slower".)
    rng = np.random.default_rng(0)
    n = 200_000
    for a_star in (0.01, 0.05, 0.2):
        q = a_star * a_star / (1.0 - a_star)  # the walk's variance per reading, noise 1 (steady-state Kalman gain a*)
        x = np.cumsum(rng.normal(0.0, np.sqrt(q), n)) + rng.normal(0.0, 1.0, n)
        for a in (0.003, 0.01, 0.1):
            if a > a_star:
                continue
            e = _ewma_errors(x, a)[1000:]
            rho = float(np.mean(e[1:] * e[:-1]) / np.mean(e * e))
            assert abs(best_gain(a, rho) - a_star) < 0.25 * a_star, (a_star, a, rho)


def test_a_rate_switches_only_on_evidence_and_only_towards_it() -> None:
    assert rechoose_rate(0.003, 0.0, 10_000, (0.003, 0.01)) is None  # white: the rate is the best
    assert rechoose_rate(0.003, 0.15, 100, (0.003, 0.01)) is None  # within 3 standard errors of white
    assert rechoose_rate(0.003, 0.6, 400, (0.003, 0.01)) == 0.01  # lagging: faster
    assert rechoose_rate(0.01, 0.2, 400, (0.003, 0.01)) is None  # lagging: never slower
    assert rechoose_rate(0.01, -0.2, 400, (0.003, 0.01)) == 0.003  # overshooting: slower


def test_a_slow_predictor_takes_a_faster_rate_once_a_wander_shows_itself() -> None:
    # A wander with a 1-hour correlation time read every second barely moves in the fit's 500
    # readings: the predictor's rate is chosen there at 0.003 (steadiest within 3 %), and later
    # lags the wander, its scale (and every spike's z) off by as much (suite seed 2,
    # wander/spike/s0.05/dt1/r0: scale 0.052 -> 0.085 over three spikes, the third at 0.79 of its
    # threshold). Its errors' lag-1 autocorrelation says so; the rate moves to 0.01. Without the
    # re-choice: none of them switches, and two of their twelve spikes score below 1 (0.76, 0.95).
    slow = switched = 0
    best: list[float] = []
    for seed in (1, 31, 39, 43):  # the seeds of 0-59 whose window chose 0.003 (the other 56: 0.01 or faster)
        x, _ = normal_signal("wander", 4000, 0.05, 1.0, np.random.default_rng(seed))
        t = T0 + np.arange(4000, dtype=np.float64)
        u = noise_over(x[:500], 1)
        for at in (1500, 2500, 3500):
            x[at] -= 10.0 * u
        d = RobustDetector()
        d.fit(x[:500], t[:500])
        if d.f_alpha != 0.003:
            continue
        slow += 1
        scores = d.score_many(x[500:], t[500:])
        switched += d.f_alpha == 0.01
        best.extend(max(scores[k], scores[k + 1]) for k in (1000, 2000, 3000))
    assert slow == 4 and switched == 4
    assert min(best) >= 1.0, best  # each raises its own alarm (1.19 the lowest)


def test_white_noise_keeps_its_slow_rate() -> None:
    # White noise: the predictor's errors are white at any slow rate, and the 3-standard-error
    # rule over pairs that accrue for the whole stream must not wander between rates (0 of the
    # 66 slow-fitted series of 100 switched; the rule's own rate is a few in a thousand looks).
    slow = switched = 0
    for seed in range(40):
        x = 20.0 + np.random.default_rng(seed).normal(0.0, 1.0, 4000)
        d = RobustDetector()
        d.fit(x[:500], T0 + np.arange(500, dtype=np.float64))
        a = d.f_alpha
        if a > 0.01:
            continue
        slow += 1
        d.score_many(x[500:], T0 + np.arange(500, 4000, dtype=np.float64))
        switched += d.f_alpha != a
    assert slow >= 20 and switched <= 1


def test_the_pairs_are_stored_with_the_model_and_an_older_model_starts_them_at_none() -> None:
    # The sums are the model's state (JSON + .npz like the rest): a model stored mid-way and
    # loaded scores on exactly as the one that was not; a model stored before them loads with
    # no pairs counted, at its fitted rate.
    x, _ = normal_signal("wander", 4000, 0.05, 1.0, np.random.default_rng(1))
    t = T0 + np.arange(4000, dtype=np.float64)
    d = RobustDetector()
    d.fit(x[:500], t[:500])
    d.score_many(x[500:1500], t[500:1500])
    params, arrays = d.get_state()
    assert params["f_rn"] > 0 and params["f_rv"] > 0.0
    e = RobustDetector.from_state(params, arrays)
    assert np.array_equal(d.score_many(x[1500:], t[1500:]), e.score_many(x[1500:], t[1500:]))
    assert d.f_alpha == e.f_alpha == 0.01
    old = {k: v for k, v in params.items() if k not in ("f_rc", "f_rv", "f_ek", "f_rn")}
    o = RobustDetector.from_state(old, arrays)
    assert o.f_rn == 0 and o.f_rc == o.f_rv == 0.0 and o.f_alpha == params["f_alpha"]
