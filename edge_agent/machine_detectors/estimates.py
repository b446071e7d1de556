"""Fit-time estimates for the machine detectors: noise, drift, relations, test limits.

Plain numpy on the fit rows; nothing here runs per row. Written by hand rather than with
scipy/statsmodels (which the agent does not ship): each is a few lines of textbook algebra.
"""

from __future__ import annotations

import math

import numpy as np


def relations(x: np.ndarray, min_r2: float, lag: int = 1) -> tuple[list[int], list[list[float]], list[float]]:
    """For each sensor whose short-term movement the others explain: its coefficients on them.

    A ridge regression of each sensor's ``lag``-row differences on the others' (kept when
    R² >= ``min_r2``). Differences, not levels: two sensors that merely trend during the fit
    rows (a warming motor and a warming fluid) correlate in level but not in their
    short-term movement, and a relation learnt from a shared trend would break as soon as
    the trends part. Over a few rows, not one: one-row differences are mostly noise, which
    shrinks the coefficients (a relation channel then keeps part of the common load, and a
    baseline that follows that load learns a broken relation within a minute).
    """
    n, p = x.shape
    if p < 2 or n < 10 + lag:
        return [], [], []
    d = x[lag:] - x[:-lag]
    sd = d.std(axis=0)
    ok = sd > 0
    targets: list[int] = []
    coefs: list[list[float]] = []
    r2s: list[float] = []
    for j in range(p):
        others = [k for k in range(p) if k != j and ok[k]]
        if not ok[j] or not others:
            continue
        a = (d[:, others] - d[:, others].mean(axis=0)) / sd[others]
        y = (d[:, j] - d[:, j].mean()) / sd[j]
        beta = np.linalg.solve(a.T @ a + 1e-3 * len(y) * np.eye(len(others)), a.T @ y)
        resid = y - a @ beta
        r2 = 1.0 - float(resid.var()) / float(y.var())
        if r2 >= min_r2:
            row = [0.0] * p
            for bv, k in zip(beta, others, strict=True):
                row[k] = float(bv * sd[j] / sd[k])
            targets.append(j)
            coefs.append(row)
            r2s.append(r2)
    return targets, coefs, r2s


def noise_floor(x: np.ndarray) -> float:
    """Short-term noise sd from second differences (``x[t+1] - 2 x[t] + x[t-1]``, which a
    smoothly moving level cancels, so a pump following its load is not taken for noise),
    robust (MAD) but never zero for quantised signals (whose MAD is 0: mean |difference|
    takes over), nor for a constant one (1e-6 of its level: a float32 carries ~7 digits)."""
    d = np.diff(x, n=2)
    mad = 1.4826 * float(np.median(np.abs(d - np.median(d))))
    mean_abs = 1.2533 * float(np.mean(np.abs(d - d.mean())))
    level = float(np.median(np.abs(x)))
    return max(mad, mean_abs, 1e-6 * level, 1e-12) / math.sqrt(6.0)


def variogram_noise_and_drift(x: np.ndarray, lags: list[int], significance: float = 0.0) -> tuple[float, float]:
    """(r, q per row) of a local-level model from the variogram ``Var(x[t+L] - x[t]) = 2 r + L q``.

    Weighted least squares over ``lags``: the variance of L-step differences from n rows is
    known to within a relative sd of about ``sqrt(2 L / n)``, so long lags weigh less. The
    drift estimate is then lowered by ``significance`` standard errors: 400 rows of pure
    noise show a "drift" of r/100 per row by chance, which would give a sensor that never
    drifts a baseline fast enough to learn a fault in seconds.
    """
    n = len(x)
    lag_arr = np.asarray(lags, dtype=np.float64)
    v = np.array([np.var(x[lag:] - x[:-lag]) for lag in lags])
    design = np.column_stack([np.full(len(lags), 2.0), lag_arr])
    sd = np.maximum(v, 1e-300) * np.sqrt(2.0 * lag_arr / n)
    w = 1.0 / sd
    (r, q), *_ = np.linalg.lstsq(design * w[:, None], v * w, rcond=None)
    if significance > 0.0 and len(lags) > 2:
        cov = np.linalg.pinv((design * w[:, None]).T @ (design * w[:, None]))
        q -= significance * math.sqrt(max(float(cov[1, 1]), 0.0))
    return max(float(r), 0.0), max(float(q), 0.0)


def rate_spread(diffs: np.ndarray, r: list[float], q: list[float], b_fast: float, b_slow: float, skip: int) -> list[float]:
    """The normal spread of each sensor's rate channel: its EWMA over the short window (rate
    ``b_fast`` per row) minus the one over the long window (``b_slow``).

    What the sensor's local-level model (noise ``r``, drift ``q`` per row, as its baseline
    uses) gives that difference, or what the fit rows show (``diffs``, their root mean square
    about zero after the first ``skip`` rows, the slow EWMA's warm-up) when that is more: as
    for a level channel's inflation ``c >= 1``, the model is the floor, the rows can only
    widen it. A slope the fit rows show is normal, whichever its sign.
    For the model: F - S = sum_k (a_s^k - a_f^k) w_(t-k+1) over the drift's steps w, plus
    the white noise filtered by the difference of the two EWMAs' weights.
    """
    a_f, a_s = 1.0 - b_fast, 1.0 - b_slow
    white = b_fast / (2.0 - b_fast) + b_slow / (2.0 - b_slow) - 2.0 * b_fast * b_slow / (1.0 - a_f * a_s)
    walk = a_f * a_f / (1.0 - a_f * a_f) + a_s * a_s / (1.0 - a_s * a_s) - 2.0 * a_f * a_s / (1.0 - a_f * a_s)
    rms = np.sqrt(np.mean(diffs[skip:] ** 2, axis=0))
    return [max(float(v), math.sqrt(max(white * rj + walk * qj, 0.0)), 1e-12) for v, rj, qj in zip(rms, r, q, strict=True)]


SETTLE_SIGNIFICANCE = 2.0


def settles(x: np.ndarray, short: int, long: int) -> float | None:
    """``Var(x[t+long] - x[t]) / Var(x[t+short] - x[t])`` if the fit rows show the sensor
    settling around a level within ``long`` rows, else None (also when there are too few rows).

    A sensor that wanders around a level (vibration, current, flow, pressure at one operating
    point) moves no further in ``long`` rows than in ``short`` (ratio ~1); one whose level
    keeps going (a temperature warming and cooling with the load) moves further (a random walk
    ``long / short``, a trend its square). Only for the first do the fit rows bound how fast
    the sensor normally moves, so only it gets a rate channel. Settled means the ratio is
    within ``SETTLE_SIGNIFICANCE`` standard errors of 1, the variance of ``long``-row
    differences from n rows being known to a relative ``sqrt(2 long / n)``
    (``variogram_noise_and_drift``). On SKAB's fit rows (17 files, ``docs/machines.md``) the
    ratio at 10 / 60 rows is 0.7-1.9 for its six mechanical and electrical sensors and 1.7-22
    for its two temperatures, against a limit of 2.1 for 400 rows.
    """
    n = len(x)
    if long >= n // 2 or short < 1 or short >= long:
        return None
    v_short = float(np.var(x[short:] - x[:-short]))
    v_long = float(np.var(x[long:] - x[:-long]))
    if v_short <= 0.0:
        return None
    ratio = v_long / v_short
    return ratio if ratio <= 1.0 + SETTLE_SIGNIFICANCE * math.sqrt(2.0 * long / n) else None


def steady_gain(lam: float) -> float:
    """Steady-state Kalman gain of a local-level model with signal-to-noise ratio q/r = lam."""
    return (-lam + math.sqrt(lam * lam + 4.0 * lam)) / 2.0 if lam > 0 else 0.0


def chi2_sf(x: float, dof: int) -> float:
    """P(chi-square with ``dof`` degrees of freedom > x), closed form for integer dof."""
    if x <= 0:
        return 1.0
    t = x / 2.0
    if dof % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, dof // 2):
            term *= t / i
            total += term
        return math.exp(-t) * total
    total = math.erfc(math.sqrt(t))
    term = math.sqrt(t) * math.exp(-t) * 2.0 / math.sqrt(math.pi)
    for i in range(1, (dof + 1) // 2):
        total += term
        term *= t / (i + 0.5)
    return total


def t2_limit(k: float, p: int) -> float:
    """The ``sqrt(T²)`` limit with the same false-alarm probability, for p independent standard
    normal z, as ``max_j |z_j| >= k``: the joint test is no more trigger-happy than the single one."""
    p_single = -math.expm1(p * math.log1p(-math.erfc(k / math.sqrt(2.0))))
    lo, hi = 0.0, 1000.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if chi2_sf(mid * mid, p) > p_single:
            lo = mid
        else:
            hi = mid
    return hi
