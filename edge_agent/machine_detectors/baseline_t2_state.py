"""``baseline_t2``'s stored form and live state, checked whole when read back.

The model store keeps a fitted detector as JSON params plus numpy arrays (``.npz``, loaded
with ``allow_pickle=False``): ``get_state`` / ``from_state``. ``from_state`` trusts nothing:
every array's shape and finiteness, the sensor list, the relation indexes and the ranges of
the variances are checked before a detector is returned, so a damaged or hostile file is a
``ValueError``, never a detector that fails later on the hot path.

``live_state`` / ``set_live_state`` carry where the baselines are across a clean restart
(``machines/checkpoint.py``).

Formats: a model stored before the rate channels has no ``rate_tau_s`` in its params and no
``fast`` / ``slow`` / ``rate_sd`` arrays; it loads as it was fitted, without rate channels,
until it is fitted again.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edge_agent.machine_detectors.baseline_t2 import BaselineT2Detector

MAX_SENSORS = 256
PARAMS = ("tau_s", "k", "hold_s", "shrink", "relation_r2", "gain_cap", "drift_significance", "rate_tau_s", "max_lag",
          "warmup_rows", "threshold")
ARRAYS = ("q", "r", "c", "p_steady", "capped", "m", "pv", "e", "held")  # per channel
RATE_ARRAYS = ("fast", "slow", "rate_sd")  # per sensor, when rate_tau_s > 0
LIVE = ("m", "pv", "e", "held")
LIVE_RATE = ("fast", "slow")


def _live_keys(d: BaselineT2Detector) -> tuple[str, ...]:
    return LIVE + LIVE_RATE if d.rate_tau_s > 0.0 else LIVE


def live_state(d: BaselineT2Detector) -> dict[str, list[float]]:
    return {k: list(getattr(d, k)) for k in _live_keys(d)}


def set_live_state(d: BaselineT2Detector, state: dict[str, Any]) -> None:
    checked = {}
    for k in _live_keys(d):
        n = len(getattr(d, k))
        v = state.get(k)
        if not isinstance(v, list) or len(v) != n or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
            raise ValueError(f"live state {k!r} must hold {n} finite numbers")
        checked[k] = [float(x) for x in v]
    if min(checked["pv"]) < 0.0 or min(checked["held"]) < 0.0:
        raise ValueError("live state: variances and held times must be >= 0")
    for k, v in checked.items():
        setattr(d, k, v)


def get_state(d: BaselineT2Detector) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    params: dict[str, Any] = {k: getattr(d, k) for k in PARAMS}
    params.update({"sensors": list(d.sensors), "k_t2": d.k_t2, "dt0": d.dt0, "rel_target": list(d.rel_target)})
    arrays = {k: np.asarray(getattr(d, k), dtype=np.float64) for k in ARRAYS}
    if d.rate_tau_s > 0.0:
        arrays.update({k: np.asarray(getattr(d, k), dtype=np.float64) for k in RATE_ARRAYS})
    p = len(d.sensors)
    arrays["cinv"] = np.asarray(d.cinv, dtype=np.float64).reshape(p, p)
    arrays["rel_coef"] = np.asarray(d.rel_coef, dtype=np.float64).reshape(len(d.rel_target), p)
    return params, arrays


def from_state(cls: type[BaselineT2Detector], params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BaselineT2Detector:
    # A model stored before the rate channels (no "rate_tau_s") loads as it was fitted:
    # without them, until it is fitted again.
    d = cls(**{k: params[k] for k in PARAMS if k != "rate_tau_s"}, rate_tau_s=params.get("rate_tau_s", 0.0))
    sensors, targets = params["sensors"], params.get("rel_target", [])
    if not isinstance(sensors, list) or not all(isinstance(s, str) for s in sensors) or not 1 <= len(sensors) <= MAX_SENSORS:
        raise ValueError(f"sensors must be a list of 1..{MAX_SENSORS} names")
    p = len(sensors)
    if not isinstance(targets, list) or len(targets) > p or not all(isinstance(i, int) and 0 <= i < p for i in targets):
        raise ValueError("rel_target must list sensor indexes")
    coef = np.asarray(arrays.get("rel_coef", np.zeros((0, p))), dtype=np.float64)
    if coef.shape != (len(targets), p) or not np.isfinite(coef).all():
        raise ValueError(f"array 'rel_coef' must be {len(targets)}x{p} and finite")
    d.sensors = list(sensors)
    d._set_arrays(p, targets, coef.tolist())
    n = p + len(targets)
    for k in ARRAYS:
        a = np.asarray(arrays[k], dtype=np.float64)
        if a.shape != (n,) or not np.isfinite(a).all():
            raise ValueError(f"array {k!r} must hold {n} finite values")
        setattr(d, k, a.tolist())
    if d.rate_tau_s > 0.0:
        for k in RATE_ARRAYS:
            a = np.asarray(arrays.get(k, np.zeros(0)), dtype=np.float64)
            if a.shape != (p,) or not np.isfinite(a).all():
                raise ValueError(f"array {k!r} must hold {p} finite values")
            setattr(d, k, a.tolist())
        if min(d.rate_sd) < 0.0:
            raise ValueError("rate spreads must be >= 0 (0: no rate channel)")
    cinv = np.asarray(arrays["cinv"], dtype=np.float64)
    if cinv.shape != (p, p) or not np.isfinite(cinv).all():
        raise ValueError(f"array 'cinv' must be {p}x{p} and finite")
    if min(d.r) <= 0.0 or min(d.c) < 1.0 or min(d.q) < 0.0 or min(d.capped) < 0.0 or max(d.capped) >= 1.0:
        raise ValueError("noise variances must be > 0, inflations >= 1, drift rates >= 0, capped gains in [0, 1)")
    d.cinv = cinv.tolist()
    d.k_t2 = float(params["k_t2"])
    d.dt0 = float(params["dt0"])
    if not (d.k_t2 > 0 and d.dt0 > 0 and math.isfinite(d.k_t2) and math.isfinite(d.dt0)):
        raise ValueError("k_t2 and dt0 must be positive")
    d._derived()
    return d
