"""The isolation forest's flat arrays and the numba kernels that walk them.

Written by hand because it is the scoring speed itself: sklearn trains the forest
(``flatten_forest`` turns its trees into the stored arrays); scoring one reading through
sklearn costs ~100x more per call. ``isolation_forest.py`` is the detector that uses these.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

N_FEATURES = 4  # value, first difference, rolling mean, rolling std (isolation_forest.shape_features)
ARRAY_KEYS = ("left", "right", "feature", "threshold", "leaf_value", "roots")


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
# * the stored layout (``ARRAY_KEYS``: global child indices, -1 at leaves) is walked node by
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


def kernel(name: str) -> Any:
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
            _perfect_rows = kernel("perfect_rows")
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
    return kernel("depth_sum")


def perfect_depth_sum(layout: tuple[np.ndarray, np.ndarray, np.ndarray, int], X32: np.ndarray, out: np.ndarray) -> None:
    """Batch depth sums over the perfect layout; parallel over row blocks for large batches,
    serial when small or when another thread is already in the parallel kernel (numba's
    workqueue threading layer must not be entered concurrently)."""
    pfeat, pthr, pleaf, depth = layout
    if X32.shape[0] >= PARALLEL_MIN_ROWS and _parallel_lock.acquire(blocking=False):
        try:
            kernel("perfect_batch_parallel")(pfeat, pthr, pleaf, X32, depth, out)
        finally:
            _parallel_lock.release()
        return
    kernel("perfect_batch")(pfeat, pthr, pleaf, X32, depth, out)


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
