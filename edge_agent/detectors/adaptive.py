"""Adaptive streaming detector: self-calibrating EWMA surprise plus a range rule, O(1) per reading."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from edge_agent.detectors import base
from edge_agent.detectors.base import Explanation


class AdaptiveDetector:
    """The agent's default: learns every reading, so drift and level shifts need no retrain.

    Two scale-free surprise measures, each normalised so that 1.0 is "anomalous":

    * **EWMA z, self-calibrated**: ``z = |x - m| / s`` against an exponentially weighted mean
      and std (rate ``alpha``), divided by ``max(k_min, surprise * z_peak)`` where ``z_peak`` is
      the largest z seen so far, slowly forgotten (``memory`` per reading). A noisy machine whose
      readings regularly reach z = 12 then needs z > 13 to alarm, a quiet one z > k_min: the
      series' own score history decides how surprising a score is (the cheap form of HTM's
      anomaly likelihood), so one threshold works across very different machines.
    * **Range rule**: distance outside the ``[min, max]`` seen so far, in units of
      ``margin * (max - min)``: catches new extremes that a slowly adapting EWMA would absorb.

    ``score = max(both)``; anomalous when ``score >= threshold`` (default 1.0). Every reading is
    scored first, then learned. The std has a floor of ``rel_floor * (max - min)`` so a flat or
    quantised signal does not turn every tiny change into a huge z.

    >>> import numpy as np
    >>> d = AdaptiveDetector()
    >>> stats = d.fit(10.0 + np.sin(np.arange(500) / 10.0))
    >>> d.score_one(10.5) < d.threshold
    True
    >>> d.score_one(25.0) >= d.threshold
    True
    """

    name: ClassVar[str] = "adaptive"
    gap_s: ClassVar[float] = math.inf  # no gap handling: every reading is scored by score_one
    streaming: ClassVar[bool] = True

    def __init__(
        self,
        alpha: float = 0.005,
        k_min: float = 7.0,
        surprise: float = 1.1,
        memory: float = 0.9999,
        margin: float = 0.05,
        rel_floor: float = 0.01,
        threshold: float = 1.0,
    ) -> None:
        for pname, value, ok in (
            ("alpha", alpha, 0.0 < alpha < 1.0),
            ("k_min", k_min, k_min > 0),
            ("surprise", surprise, surprise >= 0),
            ("memory", memory, 0.0 < memory <= 1.0),
            ("margin", margin, margin > 0),
            ("rel_floor", rel_floor, rel_floor >= 0),
            ("threshold", threshold, threshold > 0),
        ):
            if not (ok and math.isfinite(value)):
                raise ValueError(f"{pname}={value!r} is out of range")
        self.alpha = float(alpha)
        self.k_min = float(k_min)
        self.surprise = float(surprise)
        self.memory = float(memory)
        self.margin = float(margin)
        self.rel_floor = float(rel_floor)
        self.threshold = float(threshold)
        self.mean = 0.0
        self.var = 1.0
        self.lo = 0.0
        self.hi = 0.0
        self.z_peak = 0.0
        self._out = 0.0

    def fit(self, values: np.ndarray, ts: np.ndarray | None = None) -> dict[str, Any]:
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1 or v.shape[0] < 2 or not np.isfinite(v).all():
            raise ValueError("fit needs at least 2 finite values")
        self.mean = float(v.mean())
        self.var = float(v.var())
        self.lo = float(v.min())
        self.hi = float(v.max())
        # z_peak starts at 0: k_min alone governs until the series shows its own surprises.
        self.z_peak = 0.0
        return {"mean": self.mean, "std": math.sqrt(self.var), "min": self.lo, "max": self.hi}

    def score_one(self, x: float, ts: float | None = None) -> float:
        x = float(x)
        lo, hi = self.lo, self.hi
        rng = hi - lo
        if rng < 1e-12:
            rng = 1e-12
        sd = math.sqrt(self.var)
        floor = self.rel_floor * rng
        if sd < floor:
            sd = floor
        d = x - self.mean
        z = abs(d) / sd if sd > 0.0 else 0.0
        peak = self.surprise * self.z_peak
        s = z / (peak if peak > self.k_min else self.k_min)
        out = x - hi if x > hi else (lo - x if x < lo else 0.0)
        self._out = out  # for explain(): the range is updated below
        if out > 0.0:
            r = out / (self.margin * rng)
            if r > s:
                s = r
        # Learn after scoring.
        a = self.alpha
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)
        zp = self.z_peak * self.memory
        self.z_peak = z if z > zp else zp
        if x > hi:
            self.hi = x
        elif x < lo:
            self.lo = x
        return s

    def score_many(self, xs: np.ndarray, ts: np.ndarray | None = None) -> np.ndarray:
        # The state update is a strict recurrence (each score depends on all earlier readings),
        # so the batch form is the same loop; this keeps it exactly equal to score_one.
        arr = np.asarray(xs, dtype=np.float64)
        out = np.empty(arr.shape[0], dtype=np.float64)
        one = self.score_one
        for i, x in enumerate(arr.tolist()):
            out[i] = one(x)
        return out

    def band(self) -> tuple[float, float] | None:
        sd = max(math.sqrt(self.var), self.rel_floor * (self.hi - self.lo))
        k = max(self.k_min, self.surprise * self.z_peak) * self.threshold
        return (self.mean - k * sd, self.mean + k * sd)

    def explain(self, x: float) -> Explanation:
        """A new extreme beyond the range seen so far, or a spike against the running mean."""
        lo, hi = self.band()  # type: ignore[misc]
        direction = "up" if x > self.mean else "down"
        if self._out > 0.0:
            return Explanation(base.OUT_OF_RANGE, direction, lo, hi, f"{self._out:.4g} beyond the range seen before it")
        return Explanation(base.SPIKE, direction, lo, hi, f"far from the running mean {self.mean:.6g}")

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params = {
            "alpha": self.alpha, "k_min": self.k_min, "surprise": self.surprise, "memory": self.memory,
            "margin": self.margin, "rel_floor": self.rel_floor, "threshold": self.threshold,
            "mean": self.mean, "var": self.var, "lo": self.lo, "hi": self.hi, "z_peak": self.z_peak,
        }
        return params, {}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> AdaptiveDetector:
        d = cls(**{k: params[k] for k in ("alpha", "k_min", "surprise", "memory", "margin", "rel_floor", "threshold")})
        d.mean, d.var = float(params["mean"]), float(params["var"])
        d.lo, d.hi, d.z_peak = float(params["lo"]), float(params["hi"]), float(params["z_peak"])
        return d
