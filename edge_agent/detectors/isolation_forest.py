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

from edge_agent.detectors import base
from edge_agent.detectors.base import Explanation

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


# ---- the numba kernels, compiled lazily ----------------------------------------------------
#
# Two layouts are scored:
#
# * the stored layout (``_ARRAY_KEYS``: global child indices, -1 at leaves) is walked node by
#   node by ``_python_depth_sum``. It is the general path, used for forests deeper than
#   ``PERFECT_MAX_DEPTH``;
# * a "perfect" layout derived from it at load time (nothing new is stored on disk): every
#   tree padded to a complete binary tree of the forest's max depth ``D``, children implicit
#   (``2k+1`` / ``2k+2``), uint8 features, float32 thresholds, and each bottom slot holding the
#   path-length contribution of the leaf above it. A walk is then exactly ``D`` branch-free
#   steps with no child loads, so 8 rows can be walked in lock-step: 8 independent dependency
#   chains the out-of-order core overlaps, instead of one chain of dependent loads and a
#   mispredicted branch per level (~6 ns/level before). For max_samples=256 (D=8) and 100
#   trees it is ~330 KB, smaller than the stored layout.

PERFECT_MAX_DEPTH = 12  # 2**12 slots/tree = ~53 KB/tree; deeper forests use the node walk
PARALLEL_MIN_ROWS = 8192  # below this a batch is scored serially (thread start-up > the work)
_BLOCK_ROWS = 2048  # rows per parallel task; a tree's ~3 KB stays in L1 across the block

_kernel_lock = threading.RLock()  # re-entered: a batch driver compiles _perfect_rows first
_parallel_lock = threading.Lock()
_kernels: dict[str, Any] = {}
_prange = range  # replaced by numba.prange before the kernels compile (see _kernel)
_perfect_rows: Any = None  # the compiled _python_perfect_rows, set before the drivers compile


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


def _python_perfect_one(pfeat, pthr, pleaf, x, depth):  # pragma: no cover - numba compiles it
    """Depth sum of one float32 feature row over the perfect layout (the streaming path)."""
    # Node indices are uint64: numba adds a negative-index wraparound fix-up to every signed
    # index, which cost ~25% of the batch kernel.
    zero, two = np.uint64(0), np.uint64(2)
    n_internal = np.uint64(pfeat.shape[1])
    total = 0.0
    for t in range(pfeat.shape[0]):
        f = pfeat[t]
        th = pthr[t]
        a = zero
        for _ in range(depth):
            # "<=" goes left (2a+1), anything else (">" or NaN) right (2a+2), as sklearn does.
            a = a + a + two - np.uint64(x[f[a]] <= th[a])
        total += pleaf[t, a - n_internal]
    return total


def _python_perfect_rows(pfeat, pthr, pleaf, X, depth, out, s, e):  # pragma: no cover - numba compiles it
    """Depth sums of float32 rows ``X[s:e]`` into ``out[s:e]``: trees outer (a tree's nodes
    stay in L1 across the block), 12 rows walked in lock-step through each tree (measured:
    8 rows 1.6, 12 rows 1.8, 16 rows 1.8 M rows/s on one core)."""
    zero, two = np.uint64(0), np.uint64(2)
    n_internal = np.uint64(pfeat.shape[1])
    for i in range(s, e):
        out[i] = 0.0
    for t in range(pfeat.shape[0]):
        f = pfeat[t]
        th = pthr[t]
        lv = pleaf[t]
        i = s
        while i + 12 <= e:
            a0 = zero
            a1 = zero
            a2 = zero
            a3 = zero
            a4 = zero
            a5 = zero
            a6 = zero
            a7 = zero
            a8 = zero
            a9 = zero
            a10 = zero
            a11 = zero
            for _ in range(depth):
                a0 = a0 + a0 + two - np.uint64(X[i, f[a0]] <= th[a0])
                a1 = a1 + a1 + two - np.uint64(X[i + 1, f[a1]] <= th[a1])
                a2 = a2 + a2 + two - np.uint64(X[i + 2, f[a2]] <= th[a2])
                a3 = a3 + a3 + two - np.uint64(X[i + 3, f[a3]] <= th[a3])
                a4 = a4 + a4 + two - np.uint64(X[i + 4, f[a4]] <= th[a4])
                a5 = a5 + a5 + two - np.uint64(X[i + 5, f[a5]] <= th[a5])
                a6 = a6 + a6 + two - np.uint64(X[i + 6, f[a6]] <= th[a6])
                a7 = a7 + a7 + two - np.uint64(X[i + 7, f[a7]] <= th[a7])
                a8 = a8 + a8 + two - np.uint64(X[i + 8, f[a8]] <= th[a8])
                a9 = a9 + a9 + two - np.uint64(X[i + 9, f[a9]] <= th[a9])
                a10 = a10 + a10 + two - np.uint64(X[i + 10, f[a10]] <= th[a10])
                a11 = a11 + a11 + two - np.uint64(X[i + 11, f[a11]] <= th[a11])
            out[i] += lv[a0 - n_internal]
            out[i + 1] += lv[a1 - n_internal]
            out[i + 2] += lv[a2 - n_internal]
            out[i + 3] += lv[a3 - n_internal]
            out[i + 4] += lv[a4 - n_internal]
            out[i + 5] += lv[a5 - n_internal]
            out[i + 6] += lv[a6 - n_internal]
            out[i + 7] += lv[a7 - n_internal]
            out[i + 8] += lv[a8 - n_internal]
            out[i + 9] += lv[a9 - n_internal]
            out[i + 10] += lv[a10 - n_internal]
            out[i + 11] += lv[a11 - n_internal]
            i += 12
        while i < e:
            a0 = zero
            for _ in range(depth):
                a0 = a0 + a0 + two - np.uint64(X[i, f[a0]] <= th[a0])
            out[i] += lv[a0 - n_internal]
            i += 1


# Two drivers, not one function compiled twice with and without parallel=True: numba's cache
# is keyed by the function's name and line, so both variants would share (and overwrite) one
# cache entry and the "parallel" kernel could silently load the serial machine code.
def _python_perfect_batch(pfeat, pthr, pleaf, X, depth, out):  # pragma: no cover - numba compiles it
    n = X.shape[0]
    for s in range(0, n, _BLOCK_ROWS):
        _perfect_rows(pfeat, pthr, pleaf, X, depth, out, s, min(n, s + _BLOCK_ROWS))


def _python_perfect_batch_parallel(pfeat, pthr, pleaf, X, depth, out):  # pragma: no cover - numba compiles it
    n = X.shape[0]
    n_blocks = (n + _BLOCK_ROWS - 1) // _BLOCK_ROWS
    for b in _prange(n_blocks):
        s = b * _BLOCK_ROWS
        _perfect_rows(pfeat, pthr, pleaf, X, depth, out, s, min(n, s + _BLOCK_ROWS))


_NODE_SIG = "(i4[:], i4[:], i4[:], f8[:], f8[:], i4[:], f8[:, :], f8[:])"
_ONE_SIG = "f8(u1[:, ::1], f4[:, ::1], f8[:, ::1], f4[::1], i8)"
_BATCH_SIG = "(u1[:, ::1], f4[:, ::1], f8[:, ::1], f4[:, ::1], i8, f8[::1])"
_ROWS_SIG = "(u1[:, ::1], f4[:, ::1], f8[:, ::1], f4[:, ::1], i8, f8[::1], i8, i8)"
_KERNEL_SPECS: dict[str, tuple[Any, str, dict[str, bool]]] = {
    "depth_sum": (_python_depth_sum, _NODE_SIG, {}),
    "perfect_one": (_python_perfect_one, _ONE_SIG, {}),
    "perfect_rows": (_python_perfect_rows, _ROWS_SIG, {}),
    "perfect_batch": (_python_perfect_batch, _BATCH_SIG, {}),
    "perfect_batch_parallel": (_python_perfect_batch_parallel, _BATCH_SIG, {"parallel": True}),
}
_USES_ROWS = ("perfect_batch", "perfect_batch_parallel")


def _kernel(name: str) -> Any:
    """One compiled kernel, compiled on first use (the parallel one only for a large batch).
    numba is imported here, not at module import: agents that never use this detector do not
    pay its ~60 MB import. No fastmath: the kernels only compare and add, and fastmath's
    no-NaN assumption would change where a NaN feature goes."""
    k = _kernels.get(name)
    if k is not None:
        return k
    with _kernel_lock:
        k = _kernels.get(name)
        if k is not None:
            return k
        import numba

        global _prange, _perfect_rows
        _prange = numba.prange  # a plain range under parallel=False
        if name in _USES_ROWS:
            _perfect_rows = _kernel("perfect_rows")
        py_func, sig, opts = _KERNEL_SPECS[name]
        try:
            k = numba.njit(cache=True, nogil=True, **opts)(py_func)
            k.compile(sig)
        except Exception:
            # cache=True needs a writable cache dir (NUMBA_CACHE_DIR or __pycache__). On a
            # read-only install that can fail; compiling without the cache only costs start-up.
            k = numba.njit(cache=False, nogil=True, **opts)(py_func)
            k.compile(sig)
        _kernels[name] = k
        return k


def _depth_sum_kernel() -> Any:
    return _kernel("depth_sum")


def _perfect_depth_sum(layout: tuple[np.ndarray, np.ndarray, np.ndarray, int], X32: np.ndarray, out: np.ndarray) -> None:
    """Batch depth sums over the perfect layout; parallel over row blocks for large batches,
    serial when small or when another thread is already in the parallel kernel (numba's
    workqueue threading layer must not be entered concurrently)."""
    pfeat, pthr, pleaf, depth = layout
    if X32.shape[0] >= PARALLEL_MIN_ROWS and _parallel_lock.acquire(blocking=False):
        try:
            _kernel("perfect_batch_parallel")(pfeat, pthr, pleaf, X32, depth, out)
        finally:
            _parallel_lock.release()
        return
    _kernel("perfect_batch")(pfeat, pthr, pleaf, X32, depth, out)


def _threshold_down_f32(threshold: np.ndarray) -> np.ndarray:
    """Largest float32 <= each float64 threshold: for a float32 ``x``, ``x <= t`` exactly when
    ``x <= down(t)`` (no float32 lies between them), so float32 compares decide as sklearn's."""
    t = np.asarray(threshold, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        t32 = t.astype(np.float32)
        above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def perfect_layout(arrays: dict[str, np.ndarray], max_depth: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """Check the stored arrays are a forest and derive the padded perfect layout from them:
    ``(feature uint8 (T, 2**D-1), threshold float32 (T, 2**D-1), leaf float64 (T, 2**D), D)``,
    or ``None`` when the forest is deeper than ``max_depth`` (default ``PERFECT_MAX_DEPTH``).

    Raises ``ValueError`` for arrays that are not a forest (indices out of range, a node
    reached twice, a cycle): the kernels do no bounds checks and a loaded model is data.
    """
    max_depth = PERFECT_MAX_DEPTH if max_depth is None else max_depth
    left, right = arrays["left"].astype(np.int64), arrays["right"].astype(np.int64)
    feature, roots = arrays["feature"].astype(np.int64), arrays["roots"].astype(np.int64)
    threshold, leaf_value = arrays["threshold"], arrays["leaf_value"]
    n = left.shape[0]
    if not (right.shape[0] == feature.shape[0] == threshold.shape[0] == leaf_value.shape[0] == n):
        raise ValueError("isolation_forest: forest arrays differ in length")
    is_leaf = left == -1
    if (
        roots.ndim != 1
        or roots.shape[0] == 0
        or np.any((roots < 0) | (roots >= n))
        or np.any(is_leaf != (right == -1))
        or np.any(~is_leaf & ((left < 0) | (left >= n) | (right < 0) | (right >= n)))
        or np.any(~is_leaf & ((feature < 0) | (feature >= N_FEATURES)))
    ):
        raise ValueError("isolation_forest: forest arrays are not a valid forest")
    # Breadth-first, all trees at once: (tree, node, index in the padded tree) per level.
    levels = []
    tree, node, pidx = np.arange(roots.shape[0]), roots, np.zeros(roots.shape[0], dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    while node.shape[0]:
        if seen[node].any() or np.unique(node).shape[0] != node.shape[0]:
            raise ValueError("isolation_forest: forest arrays are not a valid forest (node reached twice)")
        seen[node] = True
        levels.append((tree, node, pidx))
        inner = ~is_leaf[node]
        tree, node, pidx = (
            np.concatenate((tree[inner], tree[inner])),
            np.concatenate((left[node[inner]], right[node[inner]])),
            np.concatenate((2 * pidx[inner] + 1, 2 * pidx[inner] + 2)),
        )
    depth = len(levels) - 1
    if depth > max_depth:
        return None
    n_trees, n_internal = roots.shape[0], (1 << depth) - 1
    pfeat = np.zeros((n_trees, n_internal), dtype=np.uint8)
    pthr = np.zeros((n_trees, n_internal), dtype=np.float32)  # padding below a leaf: any value
    pleaf = np.zeros((n_trees, n_internal + 1), dtype=np.float64)
    thr32 = _threshold_down_f32(threshold)
    for level, (tree, node, pidx) in enumerate(levels):
        inner = ~is_leaf[node]
        pfeat[tree[inner], pidx[inner]] = feature[node[inner]]
        pthr[tree[inner], pidx[inner]] = thr32[node[inner]]
        leaf = ~inner
        # A leaf at this level owns the 2**(D-level) bottom slots beneath it; whichever way
        # the padding below it sends a row (NaN included), the walk lands on its value.
        span = 1 << (depth - level)
        first = (pidx[leaf] + 1) * span - 1 - n_internal
        slots = first[:, None] + np.arange(span)[None, :]
        pleaf[tree[leaf][:, None], slots] = leaf_value[node[leaf]][:, None]
    return pfeat, pthr, pleaf, depth


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
            _perfect_depth_sum(layout, X32, out)
        else:
            Xf = X32.astype(np.float64)
            _kernel("depth_sum")(a["left"], a["right"], a["feature"], a["threshold"], a["leaf_value"], a["roots"], Xf, out)
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
            total = _kernel("perfect_one")(pfeat, pthr, pleaf, row, depth)
        else:
            self._row[0, :] = row
            _kernel("depth_sum")(a["left"], a["right"], a["feature"], a["threshold"], a["leaf_value"], a["roots"], self._row, self._out)
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
        d._arrays = {k: np.ascontiguousarray(arrays[k], dtype=dtypes[k]) for k in _ARRAY_KEYS}
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


__all__ = ["IsolationForestDetector", "shape_features", "flatten_forest", "average_path_length", "perfect_layout"]
