"""The spike tail's shape (docs/detectors.md, "A spike tail that learns its own shape", session 11).

Every calibrated threshold extrapolates an exponential tail from its 98 % quantile; for
Student-t noise that is far too close and the spike channel raised at ~1.3e-4 a reading for good.
The spike tail now learns a generalised Pareto shape from its calm exceedances and uses it only
where the tail is significantly heavier than exponential: a heavy tail's threshold moves out, a
gaussian or exponential tail keeps the exponential threshold exactly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge_agent.detectors import robust as R
from edge_agent.detectors.robust import SPIKE, RobustDetector

T0 = 1.7e9
N = 60_000


def _run(noise: str, seed: int = 0) -> RobustDetector:
    rng = np.random.default_rng([seed, 41])
    e = {"t3": lambda: rng.standard_t(3, N + 500), "gauss": lambda: rng.standard_normal(N + 500),
         "laplace": lambda: rng.laplace(size=N + 500)}[noise]()
    x = 50.0 + 0.5 * e
    ts = T0 + 60.0 * np.arange(N + 500)
    d = RobustDetector()
    d.fit(x[:500], ts[:500])
    score = d.score_one
    for v, t in zip(x[500:].tolist(), ts[500:].tolist(), strict=True):
        score(v, t)
    return d


def _exponential_rule(d: RobustDetector) -> float:
    """Today's rule, the exponential tail's: the 98 % quantile plus ln(0.02 / rate) mean excesses."""
    t = d.cal_q[SPIKE] + d._k * d.cal_m[SPIKE]
    return max(t, 4.0)


def test_a_heavy_tail_learns_its_shape_and_moves_its_threshold_out() -> None:
    d = _run("t3")
    assert d.sh_n >= 100.0  # the share was counted (~900 exceedances a 100,000 readings)
    assert d.sh_xi > 0.05  # Student-t(3): 1/3, and the lower bound is well above 0 by 60,000 readings
    # ... and the spike threshold is that shape's, further out than the exponential tail's
    assert d.thr[SPIKE] > 1.3 * _exponential_rule(d)
    assert d.thr[SPIKE] == pytest.approx(d.cal_q[SPIKE] + R._shape_gain(d.sh_xi, d._k) * d.cal_m[SPIKE])


@pytest.mark.parametrize("noise", ["gauss", "laplace"])
def test_a_gaussian_or_exponential_tail_keeps_the_exponential_threshold(noise: str) -> None:
    d = _run(noise)
    assert d.sh_n >= 100.0
    assert d.sh_xi == 0.0
    assert d.thr[SPIKE] == _exponential_rule(d)


def test_the_shape_round_trips_and_an_older_model_loads_at_the_prior() -> None:
    d = _run("t3", seed=1)
    assert d.sh_xi > 0.0
    params, arrays = d.get_state()
    params = json.loads(json.dumps(params))
    e = RobustDetector.from_state(params, arrays)
    keys = ("sh_med", "sh_k", "sh_n", "sh_f", "sh_f3", "sh_xi")
    assert [getattr(e, k) for k in keys] == [getattr(d, k) for k in keys]
    assert e.thr[SPIKE] == d.thr[SPIKE]
    for x in (50.3, 49.1, 50.0, 58.0):
        assert e.score_one(x, T0) == d.score_one(x, T0)
    # stored before the shape: it starts at the prior (exponential), the threshold today's rule
    for k in keys:
        del params[k]
    old = RobustDetector.from_state(params, arrays)
    assert old.sh_xi == 0.0 and old.sh_n == 0.0
    assert old.thr[SPIKE] == _exponential_rule(old)
    bad = dict(params, sh_xi=0.9)
    with pytest.raises(ValueError):
        RobustDetector.from_state(bad, arrays)


def test_routine_glitches_of_one_size_are_not_a_pareto_tail() -> None:
    # A random walk under noise with 1 % glitches of 8 noise widths (bench.robust_opcount's walk
    # stream), learned as normal: nearly every exceedance past 3 median excesses is also past 6.
    # Extrapolated as a Pareto tail (shape 0.5) its spike threshold went from 49 to 839 noise
    # scales; it keeps the exponential one.
    rng = np.random.default_rng(8)
    n = 2000 + 25_000
    x = 20.0 + np.cumsum(rng.normal(0.0, 0.05, n)) + rng.normal(0.0, 0.1, n)
    live = x[2000:].copy()
    live[::100] += 8.0 * np.std(np.diff(live))
    ts = T0 + 60.0 * np.arange(n)
    d = RobustDetector()
    d.fit(x[:2000], ts[:2000])
    for v, t in zip(live.tolist(), ts[2000:].tolist(), strict=True):
        d.score_one(v, t)
    assert d.sh_n >= 100.0 and d.sh_f / d.sh_n > 0.1  # a heavy share past 6 medians ...
    assert d.sh_f > R._SHAPE_THIN * d.sh_f3  # ... which does not thin out as a Pareto tail's does
    assert d.sh_xi == 0.0
    assert d.thr[SPIKE] == _exponential_rule(d)


def test_the_share_maps_to_the_generalised_pareto_shape() -> None:
    # an exponential tail puts 2^-6 of its exceedances beyond 6 median excesses: shape 0
    assert R._shape_of(2.0 ** -6) == 0.0
    # Student-t(3)'s tail (shape 1/3) puts (1 + 6 (2^(1/3) - 1))^-3 of them there
    p = (1.0 + 6.0 * (2.0 ** (1.0 / 3.0) - 1.0)) ** -3.0
    assert R._shape_of(p) == pytest.approx(1.0 / 3.0, abs=0.005)
    k = math.log(0.02 / 1e-6)
    assert R._shape_gain(0.0, k) == k
    assert R._shape_gain(1.0 / 3.0, k) > 5.0 * k  # the 1e-6 quantile of |t(3)| is 28.7 x its 98 % one
