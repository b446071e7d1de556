"""Isolation forest over a small shape feature vector, scored by our own numba kernel.

scikit-learn trains the forest; the fitted trees are then flattened into a handful of numpy
arrays and the sklearn object is dropped. Scoring walks those arrays in a ``@njit`` kernel, so a
saved model is plain JSON + ``.npz`` (nothing unpickled), loading it needs neither sklearn nor
pickle, and one reading costs microseconds instead of sklearn's per-call overhead.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any, ClassVar

import numpy as np

N_FEATURES = 4  # value, first difference, rolling mean, rolling std

_ARRAY_KEYS = ("left", "right", "feature", "threshold", "leaf_value", "roots")


def average_path_length(n: np.ndarray | float) -> np.ndarray:
    """Expected path length of an unsuccessful BST search in ``n`` points (sklearn's ``c(n)``)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


# ---- the numba kernel, compiled lazily -----------------------------------------------------

_kernel_lock = threading.Lock()
_kernels: dict[str, Any] = {}


def _python_depth_sum(left, right, feature, threshold, leaf_value, roots, X, out):  # pragma: no cover - numba compiles it
    n_rows = X.shape[0]
    n_trees = roots.shape[0]
    for i in range(n_rows):
        out[i] = 0.0
    # Trees outer, rows inner: one tree's nodes stay in L1 cache for the whole batch.
    for t in range(n_trees):
        root = roots[t]
        for i in range(n_rows):
            node = root
            while left[node] != -1:
                # sklearn compares float32-rounded inputs with "<="; children are global indices.
                if X[i, feature[node]] <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            out[i] += leaf_value[node]


def _depth_sum_kernel() -> Any:
    """The compiled kernel. numba is imported here, not at module import: agents that never
    use this detector do not pay its ~60 MB import."""
    k = _kernels.get("depth_sum")
    if k is not None:
        return k
    with _kernel_lock:
        k = _kernels.get("depth_sum")
        if k is not None:
            return k
        import numba

        try:
            k = numba.njit(cache=True, nogil=True)(_python_depth_sum)
            k.compile("(i4[:], i4[:], i4[:], f8[:], f8[:], i4[:], f8[:, :], f8[:])")
        except Exception:
            # cache=True needs a writable cache dir (NUMBA_CACHE_DIR or __pycache__). On a
            # read-only install that can fail; compiling without the cache only costs start-up.
            k = numba.njit(cache=False, nogil=True)(_python_depth_sum)
            k.compile("(i4[:], i4[:], i4[:], f8[:], f8[:], i4[:], f8[:, :], f8[:])")
        _kernels["depth_sum"] = k
        return k


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
        self._arrays: dict[str, np.ndarray] | None = None
        self._denominator = 1.0
        # Streaming feature state: the last `window` values and their running sums.
        self._buf: deque[float] = deque(maxlen=window)
        self._origin = 0.0  # sums are of (x - origin), to keep cancellation small
        self._sum = 0.0
        self._sum2 = 0.0
        self._since_reset = 0
        self._row = np.zeros((1, N_FEATURES), dtype=np.float64)
        self._out = np.zeros(1, dtype=np.float64)

    # ---- training ------------------------------------------------------------------------
    def fit(self, values: np.ndarray) -> dict[str, Any]:
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
            self.threshold = min(1.0, q * self.threshold_scale)
        else:
            self.threshold = self.fixed_threshold
        self._reset_stream(v[-self.window:])
        return {
            "n_trees": int(self._arrays["roots"].shape[0]),
            "n_nodes": int(self._arrays["left"].shape[0]),
            "threshold": self.threshold,
            "train_score_median": float(np.median(train_scores)),
            "train_score_max": float(train_scores.max()),
        }

    # ---- scoring -------------------------------------------------------------------------
    def score_features(self, X: np.ndarray) -> np.ndarray:
        """Scores for a raw ``(n, 4)`` feature matrix; equals ``-IsolationForest.score_samples``."""
        a = self._require_fitted()
        # sklearn scores float32 inputs against float64 thresholds; round the same way.
        Xf = np.ascontiguousarray(np.asarray(X, dtype=np.float32), dtype=np.float64)
        if Xf.ndim != 2 or Xf.shape[1] != N_FEATURES:
            raise ValueError(f"expected an (n, {N_FEATURES}) feature matrix")
        out = np.empty(Xf.shape[0], dtype=np.float64)
        _depth_sum_kernel()(a["left"], a["right"], a["feature"], a["threshold"], a["leaf_value"], a["roots"], Xf, out)
        return np.exp2(-out / self._denominator)

    def score_one(self, x: float) -> float:
        a = self._require_fitted()
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
        row = self._row
        # Same float32 rounding as score_features (and sklearn).
        row[0, 0] = np.float32(x)
        row[0, 1] = np.float32(x - prev)
        row[0, 2] = np.float32(mean_c + self._origin)
        row[0, 3] = np.float32(math.sqrt(max(self._sum2 / n - mean_c * mean_c, 0.0)))
        self._since_reset += 1
        if self._since_reset >= self.window:
            # Running sums drift with rounding (and lose precision if the level wanders far
            # from the origin); re-centre once per window: O(w) every w readings = O(1).
            self._reset_stream(np.fromiter(buf, dtype=np.float64, count=n))
        _depth_sum_kernel()(a["left"], a["right"], a["feature"], a["threshold"], a["leaf_value"], a["roots"], row, self._out)
        return 2.0 ** (-float(self._out[0]) / self._denominator)

    def score_many(self, xs: np.ndarray) -> np.ndarray:
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
        dtypes = {"left": np.int32, "right": np.int32, "feature": np.int32, "roots": np.int32, "threshold": np.float64, "leaf_value": np.float64}
        d._arrays = {k: np.ascontiguousarray(arrays[k], dtype=dtypes[k]) for k in _ARRAY_KEYS}
        d._reset_stream(np.asarray(arrays.get("history", np.empty(0)), dtype=np.float64))
        return d

    # ---- internals -----------------------------------------------------------------------
    def _require_fitted(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            raise RuntimeError("isolation_forest: fit() or from_state() first")
        return self._arrays

    def _reset_stream(self, history: np.ndarray) -> None:
        """Rebuild the rolling window from the last readings (after fit, a batch or a load)."""
        self._buf.clear()
        self._buf.extend(float(x) for x in history[-self.window:])
        self._origin = self._buf[0] if self._buf else 0.0
        self._sum = sum(x - self._origin for x in self._buf)
        self._sum2 = sum((x - self._origin) ** 2 for x in self._buf)
        self._since_reset = 0


def flatten_forest(forest: Any) -> tuple[dict[str, np.ndarray], float]:
    """Concatenate a fitted sklearn ``IsolationForest``'s trees into flat arrays.

    Children indices become global (tree offset added; -1 marks a leaf), features are mapped
    through each tree's feature subset, and each leaf carries its whole path-length
    contribution ``depth + c(n_node_samples) - 1`` so scoring is a walk and a sum. Returns the
    arrays and the normaliser ``n_trees * c(max_samples)``.
    """
    lefts, rights, feats, thrs, leafs, roots = [], [], [], [], [], []
    offset = 0
    for est, est_features in zip(forest.estimators_, forest.estimators_features_, strict=True):
        t = est.tree_
        left = t.children_left.astype(np.int64)
        right = t.children_right.astype(np.int64)
        is_leaf = left == -1
        depth = t.compute_node_depths().astype(np.float64)  # root = 1, as sklearn uses it
        leaf_value = np.where(is_leaf, depth + average_path_length(t.n_node_samples) - 1.0, 0.0)
        feature = np.where(is_leaf, 0, np.asarray(est_features)[np.maximum(t.feature, 0)])
        lefts.append(np.where(is_leaf, -1, left + offset))
        rights.append(np.where(is_leaf, -1, right + offset))
        feats.append(feature)
        thrs.append(t.threshold.astype(np.float64))
        leafs.append(leaf_value)
        roots.append(offset)
        offset += t.node_count
    if offset >= 2**31:
        raise ValueError("forest too large to flatten with int32 indices")
    arrays = {
        "left": np.concatenate(lefts).astype(np.int32),
        "right": np.concatenate(rights).astype(np.int32),
        "feature": np.concatenate(feats).astype(np.int32),
        "threshold": np.concatenate(thrs),
        "leaf_value": np.concatenate(leafs),
        "roots": np.asarray(roots, dtype=np.int32),
    }
    denominator = len(forest.estimators_) * float(average_path_length(np.array([forest._max_samples]))[0])
    if not denominator > 0:  # c(n) > 0 for n >= 2, and fit() never trains on fewer
        raise ValueError("forest trained on fewer than 2 samples")
    return arrays, denominator


__all__ = ["IsolationForestDetector", "shape_features", "flatten_forest", "average_path_length"]
