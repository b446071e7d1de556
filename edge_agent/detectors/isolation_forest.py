"""Isolation forest over a small shape feature vector, scored by our own numba kernel.

scikit-learn trains the forest; the fitted trees are then flattened into a handful of numpy
arrays and the sklearn object is dropped. Scoring walks those arrays in a ``@njit`` kernel, so a
saved model is plain JSON + ``.npz`` (nothing unpickled), loading it needs neither sklearn nor
pickle, and one reading costs microseconds instead of sklearn's per-call overhead.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, ClassVar

import numpy as np

from edge_agent.detectors import base
from edge_agent.detectors.base import Explanation
from edge_agent.detectors.iforest_kernels import (
    ARRAY_KEYS,
    N_FEATURES,
    average_path_length,
    flatten_forest,
    kernel,
    perfect_depth_sum,
    perfect_layout,
)

# ---- features ------------------------------------------------------------------------------


def shape_features(values: np.ndarray, window: int) -> np.ndarray:
    """``(n, 4)`` features per reading: value, first difference, rolling mean and rolling
    (population) std over the last ``window`` readings including this one.

    The first readings use the readings available so far (a shorter window), which is exactly
    what the streaming ``score_one`` sees after ``fit``.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    out = np.empty((n, N_FEATURES), dtype=np.float64)
    if n == 0:
        return out
    out[:, 0] = v
    out[0, 1] = 0.0
    out[1:, 1] = np.diff(v)
    # Rolling sums via cumulative sums of values centred on the first value (keeps the
    # cancellation error small for signals far from zero).
    c = v - v[0]
    cs = np.concatenate(([0.0], np.cumsum(c)))
    cs2 = np.concatenate(([0.0], np.cumsum(c * c)))
    hi = np.arange(1, n + 1)
    lo = np.maximum(0, hi - window)
    cnt = (hi - lo).astype(np.float64)
    s = cs[hi] - cs[lo]
    s2 = cs2[hi] - cs2[lo]
    mean_c = s / cnt
    out[:, 2] = mean_c + v[0]
    out[:, 3] = np.sqrt(np.maximum(s2 / cnt - mean_c * mean_c, 0.0))
    return out


class IsolationForestDetector:
    """Isolation forest on (value, diff, rolling mean, rolling std over ``window`` readings).

    Score = ``2 ** (-E[path length] / c(max_samples))`` = ``-IsolationForest.score_samples``:
    in (0, 1], higher is more anomalous, ~0.5 is ordinary. The threshold defaults to the
    ``1 - contamination`` quantile of the training scores (times ``threshold_scale``), or is
    set explicitly with ``threshold``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> d = IsolationForestDetector(window=8, n_estimators=50)
    >>> stats = d.fit(rng.normal(10.0, 1.0, 600))
    >>> d.score_one(10.2) < d.threshold
    True
    >>> d.score_one(30.0) >= d.threshold
    True
    """

    name: ClassVar[str] = "isolation_forest"
    gap_s: ClassVar[float] = math.inf  # no gap handling: every reading is scored by score_one

    def __init__(
        self,
        window: int = 16,
        n_estimators: int = 100,
        max_samples: int = 256,
        contamination: float = 0.001,
        threshold_scale: float = 1.0,
        threshold: float | None = None,
        random_state: int = 0,
    ) -> None:
        if not (isinstance(window, int) and window >= 2):
            raise ValueError("window must be an int >= 2")
        if not (isinstance(n_estimators, int) and n_estimators >= 1):
            raise ValueError("n_estimators must be an int >= 1")
        if not (isinstance(max_samples, int) and max_samples >= 2):
            raise ValueError("max_samples must be an int >= 2")
        if not (0.0 < contamination < 0.5):
            raise ValueError("contamination must be in (0, 0.5)")
        if not (threshold_scale > 0 and math.isfinite(threshold_scale)):
            raise ValueError("threshold_scale must be a positive number")
        if threshold is not None and not (0.0 < threshold <= 1.0):
            raise ValueError("threshold must be in (0, 1]")
        self.window = window
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.contamination = float(contamination)
        self.threshold_scale = float(threshold_scale)
        self.fixed_threshold = None if threshold is None else float(threshold)
        self.random_state = int(random_state)
        self.threshold = 1.0 if threshold is None else float(threshold)
        # The training data, for explanations (value range, median) and the alarm's hysteresis
        # (normal_score: the median training score; a held alarm clears below hold_ratio of
        # the way from it to the threshold, since ~0.5 is an ordinary score, not 0).
        self.normal_score = 0.0
        self.train_lo = self.train_hi = self.train_median = 0.0
        self._arrays: dict[str, np.ndarray] | None = None
        self._denominator = 1.0
        # Streaming feature state: the last `window` values and their running sums.
        self._buf: deque[float] = deque(maxlen=window)
        self._origin = 0.0  # sums are of (x - origin), to keep cancellation small
        self._sum = 0.0
        self._sum2 = 0.0
        self._since_reset = 0
        self._row = np.zeros((1, N_FEATURES), dtype=np.float64)  # node-walk path (deep forests)
        self._row32 = np.zeros(N_FEATURES, dtype=np.float32)  # perfect-layout path
        self._out = np.zeros(1, dtype=np.float64)
        # Scoring layout derived from _arrays, rebuilt whenever _arrays is replaced.
        self._layout_of: dict[str, np.ndarray] | None = None
        self._layout: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None

    # ---- training ------------------------------------------------------------------------
    @staticmethod
    def prepare_fit() -> None:
        """Import scikit-learn ahead of the first fit (~1 s): a warm fit worker calls it."""
        import sklearn.ensemble  # noqa: F401

    def fit(self, values: np.ndarray, ts: np.ndarray | None = None) -> dict[str, Any]:
        from sklearn.ensemble import IsolationForest  # training only; scoring never needs it

        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1 or v.shape[0] < 2:
            raise ValueError("fit needs at least 2 values")
        X = shape_features(v, self.window)
        forest = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, X.shape[0]),
            contamination="auto",
            random_state=self.random_state,
        ).fit(X)
        self._arrays, self._denominator = flatten_forest(forest)
        del forest
        train_scores = self.score_features(X)
        if self.fixed_threshold is None:
            q = float(np.quantile(train_scores, 1.0 - self.contamination))
            # A forest's score saturates for readings far outside everything it saw (they are
            # isolated at the first split on the value, whatever their size): when the training
            # quantile lies above that, no spike could ever alarm (1 series in 10 of issue 13's
            # black-box run). The threshold stays reachable by a reading far outside the range.
            self.threshold = min(1.0, q * self.threshold_scale, self._far_score(v) - 1e-9)
        else:
            self.threshold = self.fixed_threshold
        self._reset_stream(v[-self.window:])
        self.normal_score = float(np.median(train_scores))
        self.train_lo, self.train_hi = float(np.quantile(v, 0.005)), float(np.quantile(v, 0.995))
        self.train_median = float(np.median(v))
        return {
            "n_trees": int(self._arrays["roots"].shape[0]),
            "n_nodes": int(self._arrays["left"].shape[0]),
            "threshold": self.threshold,
            "train_score_median": float(np.median(train_scores)),
            "train_score_max": float(train_scores.max()),
        }

    def _far_score(self, v: np.ndarray) -> float:
        """The lower score of a reading far above and of one far below the training range,
        arriving after the last training readings (its features as ``score_one`` sees them)."""
        lo, hi = float(v.min()), float(v.max())
        span = max(hi - lo, abs(hi), abs(lo), 1e-12)
        tail = v[-(self.window - 1):]
        rows = [shape_features(np.append(tail, far), self.window)[-1] for far in (hi + 10 * span, lo - 10 * span)]
        return float(self.score_features(np.array(rows)).min())

    # ---- scoring -------------------------------------------------------------------------
    def score_features(self, X: np.ndarray) -> np.ndarray:
        """Scores for a raw ``(n, 4)`` feature matrix; equals ``-IsolationForest.score_samples``."""
        a = self._require_fitted()
        layout = self._scoring_layout()
        # sklearn scores float32 inputs against float64 thresholds; round the same way.
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        if X32.ndim != 2 or X32.shape[1] != N_FEATURES:
            raise ValueError(f"expected an (n, {N_FEATURES}) feature matrix")
        out = np.empty(X32.shape[0], dtype=np.float64)
        if layout is not None:
            perfect_depth_sum(layout, X32, out)
        else:
            Xf = X32.astype(np.float64)
            kernel("depth_sum")(a["left"], a["right"], a["feature"], a["threshold"], a["leaf_value"], a["roots"], Xf, out)
        return np.exp2(-out / self._denominator)

    def score_one(self, x: float, ts: float | None = None) -> float:
        a = self._require_fitted()
        layout = self._scoring_layout()
        x = float(x)
        buf = self._buf
        prev = buf[-1] if buf else x
        if len(buf) == buf.maxlen:
            old = buf[0] - self._origin
            self._sum -= old
            self._sum2 -= old * old
        buf.append(x)
        c = x - self._origin
        self._sum += c
        self._sum2 += c * c
        n = len(buf)
        mean_c = self._sum / n
        # Same float32 rounding as score_features (and sklearn): storing into a float32 array
        # rounds to nearest, like np.float32().
        row = self._row32
        row[0] = x
        row[1] = x - prev
        row[2] = mean_c + self._origin
        row[3] = math.sqrt(max(self._sum2 / n - mean_c * mean_c, 0.0))
        self._since_reset += 1
        if self._since_reset >= self.window:
            # Running sums drift with rounding (and lose precision if the level wanders far
            # from the origin); re-centre once per window: O(w) every w readings = O(1).
            self._reset_stream(np.fromiter(buf, dtype=np.float64, count=n))
        if layout is not None:
            # Serial one-row kernel: a single reading never touches the parallel kernel.
            pfeat, pthr, pleaf, depth = layout
            total = kernel("perfect_one")(pfeat, pthr, pleaf, row, depth)
        else:
            self._row[0, :] = row
            kernel("depth_sum")(a["left"], a["right"], a["feature"], a["threshold"], a["leaf_value"], a["roots"], self._row, self._out)
            total = float(self._out[0])
        return 2.0 ** (-total / self._denominator)

    def score_many(self, xs: np.ndarray, ts: np.ndarray | None = None) -> np.ndarray:
        xs = np.asarray(xs, dtype=np.float64)
        if xs.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        # Prepend the window history so the first features match what score_one would see.
        hist = np.fromiter(self._buf, dtype=np.float64, count=len(self._buf))
        full = np.concatenate((hist, xs))
        feats = shape_features(full, self.window)[hist.shape[0]:]
        scores = self.score_features(feats)
        self._reset_stream(full[-self.window:])
        return scores

    def band(self) -> tuple[float, float] | None:
        return None  # a forest has no single value band

    def explain(self, x: float) -> Explanation:
        """Out of the training range (its 0.5-99.5 % quantiles), or an unusual shape."""
        lo, hi = self.train_lo, self.train_hi
        direction = "up" if x > self.train_median else "down"
        if x > hi or x < lo:
            return Explanation(base.OUT_OF_RANGE, direction, lo, hi, "outside 99 % of the training readings")
        return Explanation(base.SHAPE, direction, lo, hi, "an unusual combination of value, step and recent mean and spread")

    # ---- state ---------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        a = self._require_fitted()
        params = {
            "window": self.window,
            "n_estimators": self.n_estimators,
            "max_samples": self.max_samples,
            "contamination": self.contamination,
            "threshold_scale": self.threshold_scale,
            "fixed_threshold": self.fixed_threshold,
            "random_state": self.random_state,
            "threshold": self.threshold,
            "denominator": self._denominator,
            "normal_score": self.normal_score,
            "train_lo": self.train_lo,
            "train_hi": self.train_hi,
            "train_median": self.train_median,
        }
        arrays = dict(a)
        arrays["history"] = np.fromiter(self._buf, dtype=np.float64, count=len(self._buf))
        return params, arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> IsolationForestDetector:
        d = cls(
            window=int(params["window"]),
            n_estimators=int(params["n_estimators"]),
            max_samples=int(params["max_samples"]),
            contamination=float(params["contamination"]),
            threshold_scale=float(params["threshold_scale"]),
            threshold=params.get("fixed_threshold"),
            random_state=int(params["random_state"]),
        )
        d.threshold = float(params["threshold"])
        d._denominator = float(params["denominator"])
        # Stored before explanations existed: no range known, a hysteresis from 0 as before.
        d.normal_score = float(params.get("normal_score", 0.0))
        d.train_lo = float(params.get("train_lo", -math.inf))
        d.train_hi = float(params.get("train_hi", math.inf))
        d.train_median = float(params.get("train_median", 0.0))
        dtypes = {"left": np.int32, "right": np.int32, "feature": np.int32, "roots": np.int32, "threshold": np.float64, "leaf_value": np.float64}
        d._arrays = {k: np.ascontiguousarray(arrays[k], dtype=dtypes[k]) for k in ARRAY_KEYS}
        d._scoring_layout()  # validates the arrays (ValueError for a corrupt model) up front
        d._reset_stream(np.asarray(arrays.get("history", np.empty(0)), dtype=np.float64))
        return d

    # ---- internals -----------------------------------------------------------------------
    def _require_fitted(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            raise RuntimeError("isolation_forest: fit() or from_state() first")
        return self._arrays

    def _scoring_layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
        """The perfect layout of ``_arrays`` (``None``: too deep, use the node walk)."""
        a = self._require_fitted()
        if self._layout_of is not a:
            self._layout = perfect_layout(a)
            self._layout_of = a
        return self._layout

    def _reset_stream(self, history: np.ndarray) -> None:
        """Rebuild the rolling window from the last readings (after fit, a batch or a load)."""
        self._buf.clear()
        self._buf.extend(float(x) for x in history[-self.window:])
        self._origin = self._buf[0] if self._buf else 0.0
        self._sum = sum(x - self._origin for x in self._buf)
        self._sum2 = sum((x - self._origin) ** 2 for x in self._buf)
        self._since_reset = 0


__all__ = ["IsolationForestDetector", "shape_features", "flatten_forest", "average_path_length", "perfect_layout"]
