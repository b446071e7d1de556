"""The statistics ``robust`` computes off the per-reading path, as plain functions of arrays.

What the fit measures in a training window (where the model of normal starts, the signal's
resolution and noise, its longest repeat, the short-term predictor's rate) and how a channel's
threshold is calibrated from its values (the tail, and the allowance a young spread needs).
Written by hand for the same reason as ``robust.py``: they are the detector's own choices; each
docstring says why it is the way it is. ``robust.py`` holds the detector that uses them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

# Candidate rates of the short-term predictor. 0.5: a wander sampled slowly (the suite's at one
# reading per 5 minutes, a 1-hour correlation time) changes between readings by as much as its
# noise, and a predictor's best gain there is ~0.6 (the Kalman gain of a level that moves by its
# noise); the next candidate down, 0.3, left a one-step error 7 % above the best (1.44 against
# 1.34 one-step noise widths, 20 such signals), and a spike of 10 noise widths scored 7.1 scales
# where it could score 7.6. Above 0.5 a predictor averages too little to be worth a rate: 1.0 is
# the last reading.
ALPHAS = (0.003, 0.01, 0.03, 0.1, 0.3, 0.5)
TAIL_P = 0.98  # calibrators track this quantile and the mean excess above it
PRIOR_EXCESS = 10.0  # pseudo-exceedances of the prior at fit
# A young drift threshold allows for how few independent samples of itself its spread rests on
# (see young_bound): a one-sided upper confidence bound at this normal quantile (95 %).
YOUNG_Z = 1.645


def backcast(v: np.ndarray, alpha: float, beta: float, clip: float) -> tuple[float, float]:
    """(level, trend) from which the model of normal's pass over the training window starts:
    the backcast, Holt-Winters' standard start. The same smoother (Huber-limited at ``clip``, as
    in training) runs backwards over the window from flat at its end, and the forward pass
    starts where it arrives, at the first reading. Started flat at the first reading instead,
    Brown's trend (a double pole at 1 - alpha / 2: ~200 readings to its peak error at alpha
    0.01) is still converging at the end of a 500-reading window on any trending series, and
    the pass learned that start-up as noise: a drift spread 9x what independent residuals give,
    steps on trends missed. The backward pass's own start-up is at the window's far end, and
    what is left of it reaches the forward pass's start damped by the whole window."""
    level, trend = float(np.median(v[-20:])), 0.0
    for x in v[::-1].tolist():
        pred = level + trend
        e = x - pred
        if not -clip < e < clip:
            e = clip if e > 0.0 else -clip
        level = pred + alpha * e
        trend += beta * e
    # Backwards, level is the level at the first reading and trend the step towards earlier ones:
    # forwards, the state whose prediction for the first reading is that level.
    return level + trend, -trend


# The daily component of the model of normal (see daily_component): identifiable only from a
# window that spans a good part of a day (under a quarter, a sine is a quadratic over it, and
# its amplitude the window's curvature over omega²) ...
DAY_SPAN = 0.25
# ... significant: the residual sum of squares it removes, in noise variances, is a chi² with 2
# degrees of freedom where there is none (white noise on a trend: 120 seeds of the suite's own
# generator, 500 readings at 60 and 300 s, max 19.4); past its 1e-6 quantile ...
DAY_CHI2 = 27.6
# ... and explaining the window to within its noise: rms residual / noise scale, 0.89-1.10 on
# those seeds with or without a daily cycle, 1.45-2.92 on a wander (its own variability is not
# a daily shape, and a sine fitted to a third of it would be carried on as one).
DAY_FIT = 1.25
# ... and carried on (see daily_component): the window's last third must show the same shape as
# its first two thirds. Chow's test of a break: where one sinusoid (with its level and trend)
# holds over the whole window, the residual sum of squares that fitting the two parts apart
# removes, over the residual variance left, is an F with 4 and n - 8 degrees of freedom (its tail
# in closed form, see daily_component; the residuals' own variance, so the rate holds whatever the
# noise scale's estimate: 0.84-1.22x the true noise on the suite's windows of white noise and
# trends). Rejected below this p-value: one real daily cycle in 1,000 loses its sinusoid (and
# keeps the line, as before session 6), a rate the test states, not one measured on the suite. Not
# 1e-6 (DAY_CHI2's rate): a window whose curve changes shape is carried on as a day it is not (a
# wrong forecast, alarms held), where a cycle refused is a model that lags, as before.
DAY_HOLD = 2.0 / 3.0
DAY_BREAK_P = 1e-3
_LOG_BREAK_P = math.log(DAY_BREAK_P)


def daily_component(v: np.ndarray, t: np.ndarray, noise: float, period: float) -> tuple[float, float] | None:
    """The window's daily sinusoid, (cos, sin) coefficients at the phase ``t % period``, or None
    where the window cannot say it has one (DAY_SPAN, DAY_CHI2, DAY_FIT, DAY_BREAK_P): then the
    model of normal is the level and trend alone. Judged with a level and a trend beside it;
    the coefficients returned are fitted with a level only: over a third of a day a sinusoid
    and a trend are nearly collinear, the trend took part of the cycle's slope, and the model
    of normal (whose trend learns slowly) kept it, a forecast error of ~1 noise width per 300
    frozen readings that raised an alarm after an offset's end (`--scenarios unseen`)."""
    n = v.shape[0]
    if n < 10 or noise <= 0.0 or t.shape != v.shape or not np.isfinite(t).all():
        return None
    span = float(t[-1] - t[0])
    if not span >= DAY_SPAN * period:
        return None
    ph = (t % period) * (2.0 * math.pi / period)
    u = (t - t[0]) / span
    x2 = np.column_stack((np.ones(n), u))
    x4 = np.column_stack((x2, np.cos(ph), np.sin(ph)))
    r2 = v - x2 @ np.linalg.lstsq(x2, v, rcond=None)[0]
    c4 = np.linalg.lstsq(x4, v, rcond=None)[0]
    r4 = v - x4 @ c4
    rss2, rss4 = float(r2 @ r2), float(r4 @ r4)
    if (rss2 - rss4) < DAY_CHI2 * noise * noise or rss4 > n * (DAY_FIT * noise) ** 2:
        return None
    # Carried on: the sinusoid, level and trend fitted to the window's first DAY_HOLD and to the
    # rest apart must not fit significantly better than one of each over the whole. With
    # r = rss_apart / rss4, the F(4, d) statistic's tail is r^(d/2) (1 + d (1 - r) / 2) (the
    # incomplete beta for 4 degrees of freedom, exact). Until session 7 the first part's fit had
    # to predict the rest better than a line: over two thirds of a third of a day a sinusoid's
    # amplitude is ill-determined (collinear with the trend; its prediction errors' variance was
    # 2.5x the noise's over the held-out third), so a real cycle of small amplitude lost to the
    # line's bias, 24 of the suite's 168 first-day cycle windows at one reading a minute (seeds
    # 0-3), where this test loses none (its smallest p-value there 0.014).
    h = int(DAY_HOLD * n)
    rss_apart = 0.0
    for part in (slice(0, h), slice(h, n)):
        xp, vp = x4[part], v[part]
        rp = vp - xp @ np.linalg.lstsq(xp, vp, rcond=None)[0]
        rss_apart += float(rp @ rp)
    half_d = 0.5 * (n - 8)
    r = rss_apart / rss4 if rss4 > 0.0 else 1.0
    if r < 1.0 and (r <= 0.0 or half_d * math.log(r) + math.log1p(half_d * (1.0 - r)) < _LOG_BREAK_P):
        return None
    c3 = np.linalg.lstsq(x4[:, (0, 2, 3)], v, rcond=None)[0]
    return float(c3[1]), float(c3[2])


def young_bound(k: float) -> float:
    """How much higher a young series' drift threshold stands, squared, where all of its spread
    is beyond what independent residuals give (``RobustDetector._refresh_plain`` scales it by that share), for ``k``
    independent samples of the drift channel's average. That ~50-reading average is correlated
    over (2 - λ) / λ = 99 readings on any series, so the readings the fit learned from and those
    judged normal since hold k = n x λ / (2 - λ) of them (5 for a 500-reading window); the part of
    its spread beyond independent residuals (the noise scale's part, known from every reading) is
    a variance estimated from those few, and a window that happened to be calm (a wander over ~8
    of its correlation times) learned it at half its long-run value. The threshold is judged at a
    one-sided 95 % upper bound of that part, k / chi²(k) with the quantile by Wilson-Hilferty:
    2.1x (the square root) at 5 samples, 1.6 at 10, 1.2 at 50, 1.06 at 400. The drift channel's
    normal stays as learned: it also stops the slow statistics learning while a ramp is on its
    way, and an allowance on it lost 12 of the suite's drifts (docs/detectors.md, "The drift
    channel on a young wander")."""
    h = 2.0 / (9.0 * k)
    c = 1.0 - h - YOUNG_Z * math.sqrt(h)
    if c < 0.05:  # under ~1 independent sample: the bound is ~89x, the channel all but silent
        c = 0.05
    return 1.0 / (c * c * c)


def calibrate(z: np.ndarray, q0: float, m0: float, runs: bool = False, tested: bool = False) -> tuple[float, float]:
    """(98 % quantile, mean excess above it) of a channel's standardised training values,
    blended with the prior at ``PRIOR_EXCESS`` pseudo-exceedances; the prior alone when
    there are too few values (e.g. the profile's channels when training spanned under a day).

    ``tested`` (the spike channel): the mean excess is the prior's own as far as the window's
    excesses are evidence of it (``prior_tail_odds``), the blend for the rest.

    ``runs`` (the level and drift channels): the r-th value in a row above the quantile counts
    1/r, as the drift channels' r-th tail update in a row does in scoring (see
    ``RobustDetector._tail``). A window's exceedances of the ~50-reading average come as one or
    two excursions; counted as independent, a calm window's one excursion (~8 values near its
    peak, a small mean excess) outweighed the prior and put the threshold below it (4.37
    standard units against 6.09 on the suite's calm wander). The ~7-reading level average,
    collected on every reading of the window, comes in runs too (session 5): counted as
    independent, its fitted threshold spread 0.71 standard units over 40 white-noise windows
    (up to 8.9), 0.57 counted in runs (up to 8.1); on a wandering level it now rests more on
    the prior (mean 5.08 -> 5.35)."""
    if z.size < 50:
        return q0, m0
    q_emp = float(np.quantile(z, TAIL_P))
    above = z > q_emp
    exc = z[above] - q_emp
    if runs and exc.size:
        i = np.arange(z.size)
        start = np.maximum.accumulate(np.where(above & ~np.concatenate(([False], above[:-1])), i, 0))
        w = 1.0 / (i - start + 1.0)[above]
        n = float(w.sum())
        m_emp = float((w * exc).sum() / n)
    else:
        n = float(exc.size)
        m_emp = float(exc.mean()) if exc.size else 0.0
    w = PRIOR_EXCESS
    m = (n * m_emp + w * m0) / (n + w)
    if tested:
        p0 = prior_tail_odds(n, m_emp, m0)
        m = p0 * m0 + (1.0 - p0) * m
    return max((n * q_emp + w * q0) / (n + w), q_emp), m


def prior_tail_odds(n: float, m_emp: float, m0: float) -> float:
    """The probability that ``n`` exceedances of mean excess ``m_emp`` come from the prior's own
    tail (exponential, mean ``m0``) rather than from a tail of the series' own, even odds before.

    A threshold is the mean excess extrapolated ~10 of itself past the quantile, from the ~8
    exceedances of a 500-reading window: its CV of ~1 / sqrt(8) made the fitted spike threshold
    of gaussian noise range 5.1-7.8 standard units (sd 0.57 over 40 windows) and a series' fate
    depend on which few readings its window held. Blending with the prior at a fixed weight
    shrinks a window that happens to look heavy as much as one whose tail is heavy (32 of NAB's
    44 probationary windows: 3x to 10^5 x the prior's mean excess), and a heavier fixed weight
    lost NAB its own tails (docs/detectors.md, session 4). Here the window is weighed as evidence: the
    exceedances' likelihood under the prior's tail against their marginal likelihood under the
    blend's own conjugate prior (inverse gamma, ``PRIOR_EXCESS`` pseudo-exceedances of mean m0).
    At n = 8: a window at the prior's mean excess keeps 0.58 of it, one at 1.5x 0.53, at 2x
    0.32, at 3x 0.02: a gaussian window's threshold spreads half as much (sd 0.34), a
    heavy-tailed one keeps its own."""
    if n <= 0.0:
        return 1.0
    s = n * m_emp
    a = PRIOR_EXCESS
    b = (a - 1.0) * m0  # the inverse gamma's scale: its mean is m0
    log_null = -n * math.log(m0) - s / m0
    log_own = a * math.log(b) + math.lgamma(a + n) - math.lgamma(a) - (a + n) * math.log(b + s)
    d = log_own - log_null
    return 0.0 if d > 700.0 else 1.0 / (1.0 + math.exp(d))


def interpolation_gain(e: np.ndarray, y: np.ndarray, clip: float) -> tuple[float, float]:
    """(gain, scale ratio) of a reading judged from both sides: the short-term predictor's
    residual ``e`` (reading t less its one-step prediction) less ``gain`` x ``y`` (reading t + 1
    less the predictor's forecast for it from before reading t), and the mean |that| over the
    mean |e|: how much the next reading tells of where the series was at t, beyond the past.

    The gain is the least-squares regression of e on y over the training window (both
    Huber-clipped at ``clip``, the predictor's own): the best linear interpolation of the level
    at t from the predictor and the next reading, chosen by the window's own autocorrelation,
    with no constant but the test's level (below). On white noise the next reading says nothing
    of the last (gain 0, the channel off, where the gain is not significant); on a level that wanders by its noise between readings (the
    suite's wander at one reading per 5 minutes, a one-step error 1.3x the noise) the gain is
    ~0.4 and the residual's scale ~0.85x the one-step error's (see docs/detectors.md,
    "A spike judged from both sides"). A step moves e and y alike and scores (1 - gain) of
    itself; a spike, which comes back, scores all of itself against a smaller scale."""
    if e.size < 50 or clip <= 0.0:
        return 0.0, 1.0
    e = np.clip(e, -clip, clip)
    y = np.clip(y, -clip, clip)
    syy = float(np.dot(y, y))
    if syy <= 0.0:
        return 0.0, 1.0
    g = float(np.dot(e, y)) / syy
    # Only where the window shows that the next reading tells something (the regression's
    # one-sided test at YOUNG_Z, the conventional 95 %): on white noise a gain of 0.02 changed
    # nothing but the cost of every reading (make bench's stream) and a second nuisance budget.
    r = e - g * y
    if not g > YOUNG_Z * math.sqrt(float(np.dot(r, r)) / max(e.size - 1, 1) / syy):
        return 0.0, 1.0
    g = min(g, 1.0)
    me = float(np.mean(np.abs(e)))
    ratio = float(np.mean(np.abs(e - g * y))) / me if me > 0.0 else 1.0
    return g, min(ratio, 1.0)


def resolution(d: np.ndarray) -> tuple[float, int]:
    """(resolution, holds-and-jumps) of a signal from its absolute first differences ``d``.

    The resolution is the smallest step the signal makes: its smallest nonzero step, except
    for a signal that holds a value and jumps by a steady amount with a jitter far below it
    (a deadband or a coarse transmitter read through a noisy conversion), whose resolution
    is the size of its jumps. SKAB's flow meter reads 32, 32, 33, 32.0077, 32 ...: its
    smallest step says 0.001, yet a deviation smaller than one jump (~1) is no evidence of
    anything. Such a signal repeats a value exactly in at least a tenth of its steps (it
    holds; a continuous signal with rare large moves does not), a third or more of its
    steps are zero or tiny against the steps that carry its movement (above 5 % of the step
    below which half the total movement is made), and those are of one size (their lower
    quartile at least half their median, unlike the bursts of a counter) and ten times its
    smallest step."""
    nz = np.sort(d[d > 0])
    if not nz.size:
        return 0.0, 0
    smallest = float(nz[0])
    moved = np.cumsum(nz)
    carrying = float(nz[min(int(np.searchsorted(moved, 0.5 * moved[-1])), nz.size - 1)])
    big = d[d >= 0.05 * carrying]
    if big.size >= 10 and d.size - big.size >= d.size / 3.0 and d.size - nz.size >= d.size / 10.0:
        jump = float(np.median(big))
        if float(np.quantile(big, 0.25)) >= 0.5 * jump and jump > 10.0 * smallest:
            return jump, 1
    return smallest, 0


# The share of a signal's steps that are two quanta or more at which its noise alone makes an
# E|dx| of half a quantum: rounded to q, gaussian noise of sd 0.443 q (1.128 x 0.443 = 0.5) steps
# by two quanta or more in 6.25 % of its nonzero steps, averaged over where the level sits (Monte
# Carlo, 200,000 pairs; 0.8 % at 0.3 q, 9.3 % at 0.5 q, 16 % at 0.6 q).
COARSE_SHARE = 0.0625
COARSE_P = 0.025  # ... and how improbable a window's few of them must be at that share (one-sided)


def coarse_lattice(d: np.ndarray, quantum: float) -> int:
    """1 where a signal's quantum is coarser than its noise, from its absolute first
    differences ``d``: fewer than COARSE_SHARE of its nonzero steps are two quanta or more,
    beyond the window's sampling error (as few at that share with probability under COARSE_P).
    There its E|dx| says where its level sits between two quanta (a level on the boundary
    flips on every other reading, E|dx| = q / 2; one mid-quantum seldom moves), not how noisy
    it is; where noise reaches the quantum, the steps of two quanta say so (a count near zero,
    NAB's Twitter volumes: 23 % of its steps)."""
    if quantum <= 0.0:
        return 0
    nz = d[d > 0.0]
    n = int(nz.size)
    c = int(np.count_nonzero(nz >= 1.5 * quantum))
    # Beyond the window's sampling error: so few two-quantum steps that a share of COARSE_SHARE
    # gives as few with a probability under COARSE_P (a lattice of twice the noise, the suite's,
    # has 9.3 %: judged on its share alone, 1 of the suite's 126 quantised windows on seed 0 and
    # 4 of the unseen suite's 108 came out coarse, and a stuck limit stretched for a coarse
    # lattice let a clip fault through; beyond the sampling error, none).
    if c >= COARSE_SHARE * n:  # at or past the share's mean: P(X <= c) is about 1/2 or more
        return 0
    # P(X <= c) for X ~ Binomial(n, COARSE_SHARE), term by term in logs: the first term,
    # (1 - COARSE_SHARE) ** n, underflows to 0 beyond ~11,000 steps (a fit on a long buffer),
    # and a product recurrence would then stay 0 and call every long window coarse.
    log_t = n * math.log1p(-COARSE_SHARE)
    odds = math.log(COARSE_SHARE / (1.0 - COARSE_SHARE))
    p = math.exp(log_t)
    for k in range(1, c + 1):
        log_t += math.log((n - k + 1) / k) + odds
        p += math.exp(log_t)
    return int(p < COARSE_P)


def longest_within(v: np.ndarray, width: float) -> int:
    """The longest stretch of readings in v whose highest and lowest differ by at most
    ``width`` (two pointers, the stretch's extremes kept in monotonic deques)."""
    hi: deque[int] = deque()
    lo: deque[int] = deque()
    x = v.tolist()
    best = start = 0
    tol = width * (1.0 + 1e-9)
    for i, a in enumerate(x):
        while hi and x[hi[-1]] <= a:
            hi.pop()
        hi.append(i)
        while lo and x[lo[-1]] >= a:
            lo.pop()
        lo.append(i)
        while x[hi[0]] - x[lo[0]] > tol:
            start += 1
            if hi[0] < start:
                hi.popleft()
            if lo[0] < start:
                lo.popleft()
        if i - start + 1 > best:
            best = i - start + 1
    return best


def poisson_at_least(mu: float, n: int) -> float:
    """P(N >= n) for N Poisson with mean ``mu``: the burst count's and the rail count's nulls."""
    if mu < 700.0:
        term, tail = math.exp(-mu), 1.0
        for k in range(n):
            tail -= term
            term *= mu / (k + 1)
        return max(tail, 0.0)
    # A fit on a long buffer (robust's burst test's mu is the window's length x the null's share:
    # past ~730,000 readings at the default rate): exp(-mu) underflows to 0 and the loop above
    # would return 1 for any n, switching the count on where bursts are routine. The terms in
    # logs; the upper tail summed from n where n is past the mean (it falls from there).
    lmu = math.log(mu)

    def term_at(k: int) -> float:
        return math.exp(k * lmu - mu - math.lgamma(k + 1.0))

    if n <= mu:
        return max(0.0, 1.0 - math.fsum(term_at(k) for k in range(n)))
    s, k = 0.0, n
    while True:
        t = term_at(k)
        s += t
        k += 1
        if t <= 1e-17 * s or t == 0.0:
            return min(s, 1.0)


def mad_scale(x: np.ndarray) -> float:
    if x.size == 0:
        return 0.0
    med = float(np.median(x))
    return 1.4826 * float(np.median(np.abs(x - med)))


def longest_run(v: np.ndarray) -> int:
    """Longest run of readings equal to the one before, in v."""
    same = np.concatenate(([False], v[1:] == v[:-1]))
    best = cur = 0
    for s in same.tolist():
        cur = cur + 1 if s else 0
        if cur > best:
            best = cur
    return best


def choose_smoothing(v: np.ndarray) -> tuple[float, float]:
    """(level gain, trend gain) of the short-term predictor: the steadiest whose one-step error
    on v is within 3 % of the best. Candidates: a level alone at each rate of ``ALPHAS``, then
    the same with a trend (Brown's double smoothing: trend gain alpha^2 / 4); fewer moving
    parts win ties, since a trend estimated from noise walks the prediction away."""
    candidates = [(a, 0.0) for a in ALPHAS] + [(a, a * a / 4.0) for a in ALPHAS]
    xs = v.tolist()
    errs = []
    for a, b in candidates:
        level, trend = xs[0], 0.0
        total = 0.0
        for x in xs[1:]:
            pred = level + trend
            e = x - pred
            total += abs(e)
            level = pred + a * e
            trend += b * e
        errs.append(total)
    return steadiest(candidates, errs)


_C = TypeVar("_C")
_STEADY_TOL = 1.03  # a candidate within 3 % of the best error is as good (see steadiest)


def steadiest(candidates: Sequence[_C], errs: Sequence[float]) -> _C:
    """The first (steadiest: candidates are in that order) candidate whose error is within
    ``_STEADY_TOL`` of the best: the predictor's rate at fit (choose_smoothing) and when
    re-chosen live (rechoose_rate) follow the one rule."""
    best = min(errs)
    return next(c for c, e in zip(candidates, errs, strict=True) if e <= _STEADY_TOL * best)


_GRAM_LAGS = 512  # the anchor's variogram: every lag up to this many (a window of 1,024 readings), else this many
# The anchor's variogram at lag k this far under the window's own sill (twice its detrended
# variance) is a hole: a cycle of about k readings (see anchor_reach). The lowest ratio of any
# other window, 0.38 (suite seeds 0-3, unseen kinds seed 0, NAB, SKAB: 2,917 windows), is
# within a factor of 1.15 of this; no window but a sawtooth's has one.
_HOLE = 1.0 / 3.0


def _walk_gram(n: int, lags: tuple[int, ...]) -> list[float]:
    """The expected variogram, at each lag, of a unit random walk of n steps less its
    least-squares line (what the window's detrended variogram shows of a diffusion of rate 1):
    E[(dx - b h)²] = h - 2 h E[dx b] + h² E[b²], averaged over the window, where b = sum w_j x_j
    and x the cumulative sum of unit steps, so that b = sum_i e_i S_i, S_i = sum_{j >= i} w_j."""
    t = np.arange(n, dtype=np.float64)
    w = (t - t.mean()) / float(np.sum((t - t.mean()) ** 2))
    suffix = np.cumsum(w[::-1])[::-1]  # S_i: the weight of step i (its effect on every later reading)
    var_b = float(np.sum(suffix[1:] ** 2))
    pre = np.concatenate(([0.0], np.cumsum(suffix)))  # pre[m] = sum of S_0 .. S_{m-1}
    out = []
    for h in lags:
        s = np.arange(n - h)
        cov = float(np.mean(pre[s + h + 1] - pre[s + 1]))  # E[(x_{s+h} - x_s) b], averaged over s
        out.append(h - 2.0 * h * cov + h * h * var_b)
    return out


def anchor_reach(v: np.ndarray) -> tuple[float, float, float, float] | None:
    """How far the level of the series may move, in normal operation, from where the training
    window left it, t readings later: the anchor channel's bound (robust.py, _anchor_bound).
    Returns (v_k, g_k, rate, se2) with Var(level(T + t) - level(T)) <= v_k + rate x max(0, t -
    g_k) + se2 x t².

    Assumed: the series less a straight line is stationary, a random walk, or a sum of such
    (AR(1), a wander, white noise), so its variogram (mean squared difference of readings a lag
    apart, as a function of the lag) is concave and lies below the extension of any chord. v_k is
    the detrended window's variogram at lag k = n / 2; rate the diffusion (a random walk's
    variance per reading; ~0 on a stationary series, whose level stays within its own spread of
    where it was); g_k what a unit random walk's detrended variogram shows at lag k (the line
    fitted to a random walk takes up part of its wander, _walk_gram), so v_k + rate (t - g_k) is
    a random walk's rate x t. se2 bounds the slope the window showed, which the anchor does not
    extrapolate (a daily cycle's window at its inflection is a line, and a line left the curve
    within hours: the suite's cycles at one reading a minute) but allows for: its square plus
    its own variance, 1.2 rate / n (a random walk's least-squares slope over n readings) plus,
    where the window shows a slope beyond its error (slope_allowance), 12 s² (1 + 2 tau) / n³ (a
    stationary series of variance s² = v_k / 2 and integrated correlation time tau, the sum over
    lags up to k of 1 - variogram / v_k).

    Where the variogram at k is a hole, far under the window's sill (twice its detrended
    variance: a cycle of about k readings), v_k is the sill.

    Wrong, and so None (the channel off), where the detrended variogram is convex (its chord
    from k / 8 to k / 4 steeper than its secant from lag 1 to k / 4, beyond the
    variogram's own error): a curve within the window (part of a cycle), which nothing here
    extrapolates. Wrong, silently, for a normal that is neither: a cycle longer than the window
    that does not show as a curve in it, a level that holds and then jumps (a batch process).
    """
    n = v.shape[0]
    k = n // 2
    if k < 16:
        return None
    t = np.arange(n, dtype=np.float64)
    slope, icpt = np.polyfit(t, v, 1)
    r = v - (icpt + slope * t)
    k2, k4, k8 = k // 2, k // 4, k // 8
    # The variogram at every lag up to k, or (a window over 1,024 readings) at _GRAM_LAGS of them
    # evenly spaced and the four the tests below read, each O(n): 1.8 ms at 500 readings, 24 at 50,000.
    lags = np.arange(1, k + 1) if k <= _GRAM_LAGS else np.unique(np.concatenate((np.linspace(1, k, _GRAM_LAGS).round(), (1, k8, k4, k))).astype(np.int64))
    gram_at = {int(j): float(np.mean((r[j:] - r[:-j]) ** 2)) for j in lags}
    gram = np.array([gram_at[int(j)] for j in lags])
    v_k = gram_at[k]
    sill = 2.0 * float(np.var(r))
    if v_k < _HOLE * sill:
        # A hole: readings k apart are alike because the window holds a cycle of about k (a
        # tank's fill and drain, a batch), not because the level stays put; from one end of
        # the cycle the level goes as far as the whole sill, which is what bounds a stationary
        # series. Taken at its lag, a sawtooth's bound (v_k 1 / 13 of its sill) was a third of
        # its range, and each drain raised a drift alarm once an operator accepted one at the
        # top (scripts/plant_normals_probe.py --only sawtooth --accept-after 30, seed 1).
        v_k = sill
    if not v_k > 0.0:
        return None
    # The diffusion rate, two ways, each at least the true rate on a concave variogram; the
    # smaller. (1) The raw readings' chord from lag k / 2 to k: a random walk's rate, plus a
    # trend's b² (k + k / 2); levelled off on a stationary series. (2) The detrended readings'
    # chord from lag k / 8 to k / 4, against what a unit random walk's detrended variogram grows
    # by there (_walk_gram): the line fitted to a random walk takes up its longer lags (beyond
    # ~n / 4 its detrended variogram no longer grows at all), not these.
    raw = float(np.mean((v[k:] - v[:-k]) ** 2) - np.mean((v[k2:] - v[:-k2]) ** 2)) / (k - k2)
    g8, g4 = _walk_gram(n, (k8, k4))
    short = (gram_at[k4] - gram_at[k8]) / (g4 - g8)
    # (a variogram's own one-sided 95 % error at lag j, as if its n - j pairs were independent)
    v4 = gram_at[k4]
    if v4 - gram_at[k8] > (v4 - gram_at[1]) * (k4 - k8) / (k4 - 1) + YOUNG_Z * v4 * math.sqrt(2.0 / (n - k4)):
        return None  # convex: a curve (see above)
    err = YOUNG_Z * v_k * math.sqrt(2.0 / (n - k))
    g_k = _walk_gram(n, (k,))[0]
    # ... and no less than the diffusion the window could hide within that error (a young
    # wander whose window showed only its noise still wanders later).
    hidden = err / g_k
    walk = max(0.0, min(raw, short))
    rate = max(hidden, walk)
    # the correlation time, in readings: the sum over lags (each sampled lag standing for the lags
    # since the one before it)
    tau = float(np.sum(np.maximum(0.0, 1.0 - gram / v_k) * np.diff(lags, prepend=0)))
    # The anchor is a level: the window's slope is no forecast (a daily cycle's window at its
    # inflection is a line, which left the curve within hours: suite, cycles read every minute),
    # only a bound on how fast normal moves, with its own error (slope_allowance).
    walk_var = 1.2 * walk / n  # a random walk's least-squares slope variance over n readings
    still_var = 6.0 * v_k * (1.0 + 2.0 * tau) / n**3  # a stationary series' (s² = v_k / 2)
    return v_k, g_k, rate, slope_allowance(float(slope), walk_var, still_var)


def slope_allowance(slope: float, walk_var: float, still_var: float) -> float:
    """What the anchor's bound allows, per squared reading, for the window's slope (anchor_reach's
    se2): its square plus the variance of its estimate under a random walk (walk_var) and, only
    where the window shows a slope (beyond YOUNG_Z of its standard error), under a stationary
    series (still_var).

    A slope within its error is what the stationary level's own fluctuation draws over the
    window, and over horizons longer than its correlation time that level stays within v_k,
    which the bound already holds: allowing for it again, t² of it, summed a second model's
    allowance where the window is evidence for one (the suite's seed-0 frog: 34.7 of a bound of
    41.8 against 24.1 without the slope, docs/detectors.md, "The stationary slope variance only
    where the window shows a slope"). A walk's stays: one window's diffusion rate is low by about
    half at the median, and over long horizons this term is what covers it."""
    se2 = slope * slope + walk_var
    if slope * slope > YOUNG_Z * YOUNG_Z * (walk_var + still_var):
        se2 += still_var
    return se2


# ---- the predictor's rate, re-chosen from its own one-step errors ----------------------------
# A level that wanders, plus white noise (the local level model), is ARIMA(0,1,1): its first
# differences are (1 - theta B) u. An exponential predictor of gain a leaves one-step errors
# e = (1 - theta B) / (1 - phi B) u, phi = 1 - a: ARMA(1,1), white only at the series' own best
# gain a* = 1 - theta. Their lag-1 autocorrelation says which side of a* the predictor is
# (positive: too slow, it lags the wander; negative: too fast) and how far, and the variance of
# the errors any other gain would leave follows from it, under that model (Box & Jenkins; Mehra
# 1970 for the innovations' test). The fit chose its rate on a window that may not have shown the wander
# (500 readings of a 1-hour wander read every second): the errors of the live predictor show it.
RATE_Z = 3.0  # the switch needs the autocorrelation this many standard errors from white (see rechoose_rate)


def _arma11_rho1(phi: float, theta: float) -> float:
    """Lag-1 autocorrelation of (1 - theta B) / (1 - phi B) u."""
    return (1.0 - phi * theta) * (phi - theta) / (1.0 + theta * theta - 2.0 * phi * theta)


def _arma11_var(phi: float, theta: float) -> float:
    """Variance of (1 - theta B) / (1 - phi B) u, per unit variance of u."""
    return (1.0 + theta * theta - 2.0 * phi * theta) / (1.0 - phi * phi)


def best_gain(a: float, rho1: float) -> float:
    """The gain a* of the local level model under which an exponential predictor of gain a
    leaves one-step errors of lag-1 autocorrelation rho1: -a / 2 at a* -> 0 (white noise around
    a constant), 1 - a at a* = 1 (a random walk), monotone between. In closed form: rho1 (1 +
    theta^2 - 2 phi theta) = (1 - phi theta)(phi - theta) is theta^2 + b theta + 1 = 0 with
    b = (1 + phi^2 - 2 rho1 phi) / (rho1 - phi); its roots' product is 1, and theta = 1 - a* is
    the one inside [0, 1)."""
    phi = 1.0 - a
    if rho1 <= -0.5 * a:
        return 0.0
    if rho1 >= phi:
        return 1.0
    b = (1.0 + phi * phi - 2.0 * rho1 * phi) / (rho1 - phi)  # (< -2 inside the range)
    theta = 0.5 * (-b - math.sqrt(max(b * b - 4.0, 0.0)))
    return min(max(1.0 - theta, 0.0), 1.0)


def rechoose_rate(a: float, rho1: float, pairs: int, candidates: tuple[float, ...]) -> float | None:
    """The predictor's new gain, or None to keep a.

    The live predictor's one-step errors showed lag-1 autocorrelation rho1 over ``pairs``
    adjacent pairs. White errors (the current gain is the series' best) would show rho1 ~ 0
    with standard error 1 / sqrt(pairs) (Bartlett); the evidence is the part of rho1 beyond
    ``RATE_Z`` standard errors (decisions are looked at repeatedly as pairs accrue: at 3 a
    white series' chance to cross at any one look is 0.3 %). ``candidates`` ascending. From the best gain that
    conservative rho1 implies, each candidate's error spread is predicted, and the rule is
    choose_smoothing's: the steadiest within 3 % of the best, taken only on the side the
    evidence points to (a lagging predictor's conservative estimate may still leave a slower
    rate within 3 %: that is no evidence for the slower rate)."""
    if pairs <= 0 or (a >= candidates[-1] if rho1 > 0.0 else a <= candidates[0]):
        return None  # (no candidate on the side the errors point to: nothing to compute)
    margin = RATE_Z / math.sqrt(pairs)
    if -margin <= rho1 <= margin:
        return None
    rho_c = rho1 - margin if rho1 > 0.0 else rho1 + margin
    theta_c = 1.0 - best_gain(a, rho_c)
    sd = [math.sqrt(_arma11_var(1.0 - c, theta_c)) for c in candidates]
    pick = steadiest(candidates, sd)
    if (pick <= a) if rho1 > 0.0 else (pick >= a):
        return None
    return pick


def operating_levels(v: np.ndarray, band: float, most: int = 4) -> list[float]:
    """The levels a training window held, where it is a few setpoints with noise (a
    controller moved between them, a machine between duties); else [].

    Its values fall in 2 to ``most`` groups, each further than 2 x ``band`` (a reading's
    scatter about its level) from the next, with no such gap within one; each group holds at
    least 5 % of the window and is no wider than a level with that scatter (its MAD-based
    spread at most band / 2); readings between the groups (a move's transit) are at most 2 %
    of the window; and the window stays in a group for 20 readings at a time on average (a
    level held, not a signal flipping between two values). The levels are the groups' medians.
    """
    n = v.size
    if n < 100 or not band > 0.0:
        return []
    s = np.sort(v)
    cuts = np.nonzero(np.diff(s) > 2.0 * band)[0]
    if cuts.size == 0 or cuts.size > 3 * most:
        return []
    groups = np.split(s, cuts + 1)
    big = [g for g in groups if g.size >= 0.05 * n]
    if not 2 <= len(big) <= most or n - sum(g.size for g in big) > 0.02 * n:
        return []
    if any(mad_scale(g) > 0.5 * band for g in big):
        return []
    label = np.searchsorted(s[cuts], v, side="left")  # the group of each reading, in time order
    if np.count_nonzero(np.diff(label)) > n / 20:
        return []
    return [float(np.median(g)) for g in big]
