"""Mean ± k·sigma: the classic statistical detector, frozen after fit."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from edge_agent.detectors import base
from edge_agent.detectors.base import Explanation


class StatisticalDetector:
    """Score = |x - mean| / std of the training data; anomalous when score >= k.

    >>> import numpy as np
    >>> d = StatisticalDetector(k=3.0)
    >>> stats = d.fit(np.array([10.0, 11.0, 9.0, 10.0, 10.5, 9.5]))
    >>> round(d.score_one(10.0), 3)
    0.0
    >>> d.score_one(20.0) >= d.threshold
    True
    """

    name: ClassVar[str] = "statistical"
    gap_s: ClassVar[float] = math.inf  # no gap handling: every reading is scored by score_one

    def __init__(self, k: float = 3.0, min_std: float = 1e-9) -> None:
        if not (k > 0 and math.isfinite(k)):
            raise ValueError("k must be a positive number")
        self.k = float(k)
        self.min_std = float(min_std)
        self.threshold = self.k
        self.mean = 0.0
        self.std = 1.0
        self._inv_std = 1.0

    def fit(self, values: np.ndarray, ts: np.ndarray | None = None) -> dict[str, Any]:
        values = np.asarray(values, dtype=np.float64)
        self.mean = float(values.mean())
        # A flat training signal has std 0; a floor keeps any change from it detectable
        # without dividing by zero.
        self.std = max(float(values.std()), self.min_std)
        self._inv_std = 1.0 / self.std
        return {"mean": self.mean, "std": self.std, "min": float(values.min()), "max": float(values.max())}

    def score_one(self, x: float, ts: float | None = None) -> float:
        return abs(x - self.mean) * self._inv_std

    def score_many(self, xs: np.ndarray, ts: np.ndarray | None = None) -> np.ndarray:
        return np.abs(np.asarray(xs, dtype=np.float64) - self.mean) * self._inv_std

    def band(self) -> tuple[float, float] | None:
        return (self.mean - self.k * self.std, self.mean + self.k * self.std)

    def explain(self, x: float) -> Explanation:
        """Outside the band learned at fit (mean +- k sigma): the only deviation this model knows."""
        lo, hi = self.band()  # type: ignore[misc]
        z = (x - self.mean) * self._inv_std
        return Explanation(base.OUT_OF_RANGE, "up" if z > 0 else "down", lo, hi, f"{abs(z):.1f} standard deviations from the training mean {self.mean:.6g}")

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"k": self.k, "min_std": self.min_std, "mean": self.mean, "std": self.std}, {}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> StatisticalDetector:
        d = cls(k=params["k"], min_std=params.get("min_std", 1e-9))
        d.mean = float(params["mean"])
        d.std = float(params["std"])
        d._inv_std = 1.0 / d.std
        return d
