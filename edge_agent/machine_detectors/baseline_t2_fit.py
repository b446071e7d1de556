"""``baseline_t2``'s fit: everything the detector reads off its fit rows, and the report of it.

The detector's per-row scoring (``baseline_t2.py``) runs in the agent's event loop for every
row, in microseconds; this runs once per fit, in the worker process, over a few hundred rows
with numpy. It sets the detector's calibration, which scoring only reads:

* the relations between sensors (``estimates.relations``), which decide the channels;
* per channel, noise ``r`` and drift ``q`` from the variogram, with the noise floor, and the
  gain cap's slower baseline and its larger steady-state spread;
* a prequential pass over the fit rows (scored by the detector's own ``_step``, ungated): it
  warms the state up and measures the spread inflation ``c`` and the correlation of ``z``
  behind Hotelling's T²;
* which sensors settle within ``rate_tau_s`` and the normal spread of their rate channels.

``fit_report`` is what ``fit`` returns: per sensor and relation, the figures a person checks
(kept with the model in its metadata).

Kept apart from scoring so that each file holds one concept: the statistics of calibration
here, the streaming filter there. It calls into the detector (``_set_arrays``, ``_derived``,
``_channels``, ``_step``) and the detector's ``fit`` calls ``fit`` here, as
``baseline_t2_state.py`` does for the stored form; nothing imports it but ``baseline_t2.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.machine_detectors.baseline_t2_state import MAX_SENSORS
from edge_agent.machine_detectors.estimates import (
    noise_floor,
    rate_spread,
    relations,
    settles,
    steady_gain,
    t2_limit,
    variogram_noise_and_drift,
)

if TYPE_CHECKING:
    from edge_agent.machine_detectors.baseline_t2 import BaselineT2Detector


def fit(d: BaselineT2Detector, rows: np.ndarray, ts: np.ndarray, sensors: Sequence[str]) -> dict[str, Any]:
    """Calibrate ``d`` on ``rows`` (n x p) at times ``ts``; returns ``fit_report``'s figures."""
    x = np.asarray(rows, dtype=np.float64)
    t = np.asarray(ts, dtype=np.float64)
    sensors = [str(s) for s in sensors]
    if x.ndim != 2 or x.shape[1] != len(sensors) or not 1 <= len(sensors) <= MAX_SENSORS:
        raise ValueError(f"rows must be (n, {len(sensors)}) for {len(sensors)} sensors (1..{MAX_SENSORS})")
    n, p = x.shape
    if n < 50 or t.shape != (n,):
        raise ValueError(f"fit needs at least 50 rows with one timestamp each, got {n}")
    warm = min(d.warmup_rows, n // 4)
    if not (np.isfinite(x).all() and np.isfinite(t).all()):
        raise ValueError("fit rows must be finite")
    if len(set(sensors)) != p:
        raise ValueError("sensor names must be unique")
    steps = np.diff(t)
    steps = steps[steps > 0]
    d.sensors = sensors
    dt0 = float(np.median(steps)) if steps.size else 1.0
    # Relations over half the smoothing window: the movements the detector looks at.
    rel_lag = max(1, round(d.tau_s / (2.0 * dt0)))
    rel_target, rel_coef, rel_r2 = relations(x, d.relation_r2, rel_lag)
    d._set_arrays(p, rel_target, rel_coef)
    d.dt0 = dt0
    d._derived()
    xc = d._channels(x)
    nch = xc.shape[1]
    _noise_and_drift(d, xc, n)
    # Prequential pass over the fit rows (no gate): warms the state up, and measures how
    # far the real z spread exceeds the model's and how the sensors' z move together.
    d.m = [float(v) for v in xc[:warm].mean(axis=0)]
    d.pv = list(d.p_steady)
    d.fast = d.m[:p]
    d.slow = d.m[:p]
    z_rows = np.empty((n, nch))
    zr_rows = np.empty((n, p))
    for i in range(n):
        dt = float(t[i] - t[i - 1]) if i else d.dt0
        d._step(x[i].tolist(), dt if dt > 0 else 0.0, gate=False)
        z_rows[i] = d.last_z
        zr_rows[i] = d.last_zr
    if d.rate_tau_s > 0.0:
        lag_s, lag_r = max(1, round(d.tau_s / dt0)), round(d.rate_tau_s / dt0)
        d.rate_ratio = [settles(x[:, j], lag_s, lag_r) for j in range(p)]
        spread = rate_spread(zr_rows, d.r[:p], [qj * dt0 for qj in d.q[:p]], d._b0, d._br0,
                             min(n // 2, max(warm, lag_r)))
        # 0: no rate channel (the sensor does not settle within the window, see settles()).
        d.rate_sd = [sd if ratio is not None else 0.0 for sd, ratio in zip(spread, d.rate_ratio, strict=True)]
        d.last_zr = [0.0] * p
    z_rows = z_rows[warm:]
    rms = np.sqrt(np.mean(z_rows * z_rows, axis=0))
    d.c = [max(1.0, float(v)) for v in rms]
    zs = z_rows[:, :p] / np.asarray(d.c[:p])
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(zs.T) if p > 1 else np.ones((1, 1))
    corr = np.nan_to_num(np.atleast_2d(corr), nan=0.0)
    np.fill_diagonal(corr, 1.0)
    corr = (1.0 - d.shrink) * corr + d.shrink * np.eye(p)
    d.cinv = np.linalg.pinv(corr).tolist()
    d.k_t2 = t2_limit(d.k, p)
    d.held = [0.0] * nch
    return fit_report(d, n, rel_r2)


def _noise_and_drift(d: BaselineT2Detector, xc: np.ndarray, n: int) -> None:
    """Each channel's noise ``r``, drift ``q`` per second and steady-state spread (capped gain)."""
    # Variogram lags up to max_lag seconds' worth of rows (max_lag rows at 1 Hz).
    max_lag_rows = max(2.0, d.max_lag / d.dt0)
    lags = [lag for lag in (2**i for i in range(16)) if lag <= max_lag_rows and lag < n // 4]
    for j in range(xc.shape[1]):
        r, q_row = variogram_noise_and_drift(xc[:, j], lags, d.drift_significance)
        floor = noise_floor(xc[:, j])
        r = max(r, 0.5 * floor * floor)
        # A drift slower than this moves the level by less than the standard error of the
        # fit rows' mean over the whole fit window: the fit rows cannot show it.
        q_row = max(q_row, r / (n * n))
        d.r[j] = r
        d.q[j] = q_row / d.dt0
        gain = steady_gain(q_row / r)
        cap = d.gain_cap * d._b0
        if gain > cap:
            # A baseline faster than the smoothing would learn a step before the smoothed
            # deviation shows it: cap the gain, and take the larger steady-state error of
            # the slower baseline (an EWMA tracking a random walk) as its spread.
            d.capped[j] = cap
            d.p_steady[j] = (q_row * (1.0 - cap) ** 2 + cap * cap * r) / (1.0 - (1.0 - cap) ** 2)
        else:
            d.p_steady[j] = gain * r


def fit_report(d: BaselineT2Detector, n: int, rel_r2: list[float]) -> dict[str, Any]:
    """What a fit found, per sensor and per relation (the ``R²`` of each relation, ``rel_r2``,
    is known only at fit time: the stored form does not keep it)."""
    p = len(d.sensors)
    sensors, rel_target, rel_coef = d.sensors, d.rel_target, d.rel_coef
    stats: dict[str, Any] = {"rows": n, "interval_s": d.dt0, "k_t2": d.k_t2, "sensors": {}, "relations": {}}
    for j in range(p + len(rel_target)):
        gain = d.capped[j] or steady_gain(d.q[j] * d.dt0 / d.r[j])
        info = {
            "noise_sd": math.sqrt(d.r[j]),
            "drift_sd_per_s": math.sqrt(d.q[j]),
            "baseline_time_constant_s": d.dt0 / gain if gain > 0 else None,
            "spread_inflation": d.c[j],
        }
        if j < p:
            if d.rate_tau_s > 0.0:
                # The normal spread of the sensor's slope (units per second, over rate_tau_s),
                # None: no rate channel; and the variance ratio that decided it.
                info["rate_sd_per_s"] = d.rate_sd[j] / (d.rate_tau_s - d.tau_s) if d.rate_sd[j] else None
                info["rate_variance_ratio"] = d.rate_ratio[j]
            stats["sensors"][sensors[j]] = info
        else:
            i = j - p
            target = sensors[rel_target[i]]
            info["r2"] = rel_r2[i]
            info["from"] = {sensors[k]: rel_coef[i][k] for k in range(p) if rel_coef[i][k]}
            stats["relations"][target] = info
    return stats
