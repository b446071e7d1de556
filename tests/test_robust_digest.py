"""RobustDetector's scores, explanations and state on seeded signals, fixed to stored digests.

The per-reading path is written for CPython's speed (cached constants, inlined updates, slow
work spread over readings), and a restructuring of it must compute exactly what it did: a
digest of every score (12 significant digits), every explanation and the final state on four
signals that take each path (the daily profile serving and learning in the background, one
reading a second and a minute, no timestamps, spikes, steps, a stuck sensor, a noise burst, a
ramp, a quantised signal) catches any change, intended or not.

A change that is meant to alter what the detector computes updates DIGESTS: run this file with
``UPDATE_ROBUST_DIGESTS=1`` and put the printed digests here, saying why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edge_agent.detectors.robust import RobustDetector

T0 = 1.7e9


def _faults(x: np.ndarray, rng: np.random.Generator, sd: float) -> np.ndarray:
    """Spikes, a step, a stuck run, a noise burst and a ramp, after the first 1,000 readings."""
    n = x.shape[0]
    x = x.copy()
    for at in range(1500, n, 700):
        x[at] += 12.0 * sd
    x[2200:2500] += 5.0 * sd  # a step
    x[3000:3080] = x[3000]  # stuck
    x[3600:3800] += rng.normal(0.0, 4.0 * sd, 200)  # a noise burst
    x[4300:4700] += np.linspace(0.0, 8.0 * sd, 400)  # a ramp, then back
    return x


def _minute() -> tuple[np.ndarray, np.ndarray | None, int]:
    rng = np.random.default_rng(101)
    x = 20.0 + rng.normal(0.0, 1.0, 6000)
    return _faults(x, rng, 1.0), T0 + 60.0 * np.arange(6000), 1000


def _cycle() -> tuple[np.ndarray, np.ndarray | None, int]:
    # Every 5 minutes, 5 days of training: the daily profile learns on every reading and serves.
    rng = np.random.default_rng(102)
    t = T0 + 300.0 * np.arange(7000)
    x = 50.0 + 5.0 * np.sin(2.0 * math.pi * t / 86400.0) + rng.normal(0.0, 0.5, 7000)
    return _faults(x, rng, 0.5), t, 1440


def _second() -> tuple[np.ndarray, np.ndarray | None, int]:
    rng = np.random.default_rng(103)
    x = 5.0 + np.cumsum(rng.normal(0.0, 0.02, 6000)) + rng.normal(0.0, 0.1, 6000)
    return _faults(x, rng, 0.1), T0 + np.arange(6000, dtype=np.float64), 1000


def _quantised() -> tuple[np.ndarray, np.ndarray | None, int]:
    rng = np.random.default_rng(104)
    x = np.round(2.0 * (30.0 + rng.normal(0.0, 1.0, 6000))) / 2.0
    return _faults(x, rng, 1.0), None, 1000


SIGNALS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray | None, int]]] = {
    "minute": _minute, "cycle_5min": _cycle, "second_wander": _second, "quantised_untimed": _quantised,
}
DIGESTS = {
    "cycle_5min": "42464381aa0051f185e1028bd917fe9d74feb9732a5a0c53094cf2672dd649ed",
    "minute": "f0634c1684256c651cf1abe956f69ba354592f3e51a78d4e032ae2e3b4fce8cf",
    "quantised_untimed": "2c735ed391c1729b195d0658ccd59786b7c39baa9d5f24ed7a89f818f58bcccc",
    "second_wander": "10b7cbf3ef6f2be7b1a5f585216188cb547d4f1d67c3dcde0cc59c52188443d4",
}


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.12g}"
    if isinstance(v, (list, tuple)):
        return [_fmt(u) for u in v]
    if isinstance(v, dict):
        return {k: _fmt(u) for k, u in v.items()}
    return v


def digest(name: str) -> tuple[str, int]:
    """(sha256 of every score, explanation and the final state; alarming readings seen)."""
    x, ts, n_fit = SIGNALS[name]()
    d = RobustDetector()
    d.fit(x[:n_fit], None if ts is None else ts[:n_fit])
    h = hashlib.sha256()
    alarming = 0
    for i in range(n_fit, x.shape[0]):
        s = d.score_one(float(x[i]), None if ts is None else float(ts[i]))
        h.update(f"{s:.12g}\n".encode())
        if s >= d.threshold:
            alarming += 1
            e = d.explain(float(x[i]))
            h.update(json.dumps(_fmt([e.kind, e.direction, e.expected_low, e.expected_high, e.detail])).encode())
    params, arrays = d.get_state()
    h.update(json.dumps(_fmt(params), sort_keys=True).encode())
    for k in sorted(arrays):
        h.update(json.dumps(_fmt(np.asarray(arrays[k]).tolist())).encode())
    return h.hexdigest(), alarming


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_scores_explanations_and_state_are_unchanged(name: str) -> None:
    got, alarming = digest(name)
    if os.environ.get("UPDATE_ROBUST_DIGESTS"):
        print(f'\n    "{name}": "{got}",')
        return
    assert alarming > 0  # the signal reaches the alarm paths, not only the calm ones
    assert got == DIGESTS[name], (
        f"RobustDetector computes something else on the {name!r} signal: if intended, update DIGESTS "
        "(UPDATE_ROBUST_DIGESTS=1 pytest -s tests/test_robust_digest.py) and say why in the commit")
