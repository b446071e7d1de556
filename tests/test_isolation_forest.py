"""IsolationForestDetector: our flattened-tree kernel equals sklearn, state round-trips safely."""

from __future__ import annotations

import doctest
import io

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from edge_agent.detectors import create
from edge_agent.detectors import iforest_kernels as kernels
from edge_agent.detectors import isolation_forest as iforest
from edge_agent.detectors.isolation_forest import (
    IsolationForestDetector,
    flatten_forest,
    shape_features,
)


def _fitted(n: int = 1500, seed: int = 3, **params) -> tuple[IsolationForestDetector, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = 50.0 + np.cumsum(rng.normal(size=n)) + 5.0 * np.sin(np.arange(n) / 20.0)
    d = IsolationForestDetector(**params)
    d.fit(v)
    return d, v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_features_equals_sklearn_score_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    X_train = rng.normal(size=(800, 4)) * [10.0, 1.0, 10.0, 0.5] + [100.0, 0.0, 100.0, 1.0]
    forest = IsolationForest(n_estimators=60, max_samples=200, random_state=seed).fit(X_train)
    d = IsolationForestDetector()
    d._arrays, d._denominator = flatten_forest(forest)
    # Random inputs inside and far outside the training range, plus the training rows.
    X = np.vstack([rng.normal(size=(3000, 4)) * [30.0, 3.0, 30.0, 2.0] + [100.0, 0.0, 100.0, 1.0], X_train])
    err = np.max(np.abs(d.score_features(X) - (-forest.score_samples(X))))
    assert err <= 1e-9


def test_fit_features_match_sklearn_on_the_detector_own_features() -> None:
    d, v = _fitted(window=12, n_estimators=40)
    X = shape_features(v, 12)
    forest = IsolationForest(n_estimators=40, max_samples=256, random_state=0).fit(X)
    assert np.max(np.abs(d.score_features(X) + forest.score_samples(X))) <= 1e-9


def test_shape_features_rolling_stats() -> None:
    v = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    X = shape_features(v, 3)
    assert X[:, 0].tolist() == v.tolist()
    assert X[:, 1].tolist() == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert X[4, 2] == pytest.approx(np.mean([4.0, 8.0, 16.0]))
    assert X[4, 3] == pytest.approx(np.std([4.0, 8.0, 16.0]))
    assert X[1, 3] == pytest.approx(np.std([1.0, 2.0]))  # shorter window at the start


def test_score_many_equals_sequential_score_one() -> None:
    d, v = _fitted(window=8, n_estimators=50)
    params, arrays = d.get_state()
    twin = IsolationForestDetector.from_state(params, arrays)
    rng = np.random.default_rng(9)
    xs = v[-1] + np.cumsum(rng.normal(size=2000))
    xs[700] += 40.0  # a spike, so both paths also agree on anomalous rows
    seq = np.array([d.score_one(float(x)) for x in xs])
    # In uneven chunks: the rolling window must carry across batch boundaries.
    batch = np.concatenate([twin.score_many(xs[:1]), twin.score_many(xs[1:333]), twin.score_many(xs[333:])])
    np.testing.assert_allclose(batch, seq, rtol=0, atol=1e-12)
    assert seq[700] >= d.threshold > np.median(seq)


def test_state_round_trip_through_npz_without_pickle() -> None:
    d, v = _fitted()
    params, arrays = d.get_state()
    import json

    params = json.loads(json.dumps(params))  # must be JSON-safe
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        loaded = {k: npz[k] for k in npz.files}
    back = IsolationForestDetector.from_state(params, loaded)
    xs = np.concatenate([v[-200:], [v.max() + 100.0]])
    np.testing.assert_array_equal(back.score_many(xs), d.score_many(xs))
    assert back.threshold == d.threshold


def test_threshold_flags_spikes_not_ordinary_readings() -> None:
    d, v = _fitted()
    ordinary = d.score_many(v[-300:])
    assert (ordinary >= d.threshold).mean() < 0.05
    assert d.score_one(float(v.max() + 200.0)) >= d.threshold


def test_registry_and_params() -> None:
    assert isinstance(create("isolation_forest", {"window": 4}), IsolationForestDetector)
    with pytest.raises(TypeError, match="isolation_forest"):
        create("isolation_forest", {"bogus": 1})
    with pytest.raises(ValueError):
        IsolationForestDetector(window=1)
    with pytest.raises(RuntimeError):
        IsolationForestDetector().score_one(1.0)


def test_doctest() -> None:
    assert doctest.testmod(iforest).failed == 0


# ---- the perfect-layout kernels ------------------------------------------------------------


def _sklearn_case(seed: int = 0, n_estimators: int = 30, max_samples: int = 200):
    rng = np.random.default_rng(seed)
    X_train = rng.normal(size=(800, 4)) * [10.0, 1.0, 10.0, 0.5] + [100.0, 0.0, 100.0, 1.0]
    forest = IsolationForest(n_estimators=n_estimators, max_samples=max_samples, random_state=seed).fit(X_train)
    d = IsolationForestDetector()
    d._arrays, d._denominator = flatten_forest(forest)
    X = np.vstack([rng.normal(size=(2999, 4)) * [30.0, 3.0, 30.0, 2.0] + [100.0, 0.0, 100.0, 1.0], X_train])
    return d, forest, X


def test_inputs_on_the_thresholds_go_the_same_way_as_sklearn() -> None:
    # The perfect layout stores float32 thresholds rounded down; rows sitting exactly on a
    # float32 neighbour of a (float64) threshold are where a wrong rounding would show.
    d, forest, _ = _sklearn_case(seed=4)
    a = d._arrays
    inner = a["left"] != -1
    thr, feat = a["threshold"][inner], a["feature"][inner]
    t32 = thr.astype(np.float32)
    rows = []
    for step in (-1, 0, 1):
        v = np.nextafter(t32, np.float32(np.inf) if step > 0 else np.float32(-np.inf)) if step else t32
        X = np.tile(np.float32(100.0), (thr.shape[0], 4))
        X[np.arange(thr.shape[0]), feat] = v
        rows.append(X.astype(np.float64))
    X = np.vstack(rows)
    assert d._scoring_layout() is not None
    assert np.max(np.abs(d.score_features(X) + forest.score_samples(X))) <= 1e-9


def test_node_walk_fallback_for_deep_forests_equals_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "PERFECT_MAX_DEPTH", 3)  # every tree here is deeper
    d, forest, X = _sklearn_case(seed=5)
    assert d._scoring_layout() is None
    assert np.max(np.abs(d.score_features(X) + forest.score_samples(X))) <= 1e-9
    d._reset_stream(np.array([100.0, 101.0]))
    twin = IsolationForestDetector.from_state(*d.get_state())
    xs = np.array([100.0, 102.0, 99.0, 250.0])
    np.testing.assert_allclose([d.score_one(x) for x in xs], twin.score_many(xs), rtol=0, atol=1e-12)


def test_parallel_batch_kernel_equals_serial_and_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    d, forest, X = _sklearn_case(seed=6)
    serial = d.score_features(X)
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ROWS", 1)
    for n in (1, 11, 13, 2047, 2049, X.shape[0]):  # tails shorter than the lock-step width / a block
        par = d.score_features(X[:n])
        np.testing.assert_array_equal(par, serial[:n])
    assert "perfect_batch_parallel" in kernels._kernels
    assert np.max(np.abs(serial + forest.score_samples(X))) <= 1e-9


def test_non_finite_features_score_like_the_node_walk() -> None:
    # sklearn rejects NaN; ours sends NaN right ("not <="), as the node walk always did.
    d, _, X = _sklearn_case(seed=7)
    X = X[:500].copy()
    X[::7, 0] = np.nan
    X[::11, 1] = np.inf
    X[::13, 2] = -np.inf
    X[::17, 3] = 1e300  # beyond float32: inf after rounding
    a = d._arrays
    with np.errstate(over="ignore"):
        X32 = np.asarray(X, dtype=np.float32)
        got = d.score_features(X)
    ref = np.empty(X.shape[0])
    kernels.kernel("depth_sum")(
        a["left"], a["right"], a["feature"], a["threshold"], a["leaf_value"], a["roots"], X32.astype(np.float64), ref
    )
    np.testing.assert_allclose(got, np.exp2(-ref / d._denominator), rtol=0, atol=1e-12)


def test_state_arrays_keep_the_stored_layout() -> None:
    # The perfect layout is derived at load time, never stored: models saved before it load
    # unchanged, and files written now load in older agents.
    d, _ = _fitted(n=600, n_estimators=10)
    _, arrays = d.get_state()
    assert set(arrays) == {"left", "right", "feature", "threshold", "leaf_value", "roots", "history"}
    assert arrays["left"].dtype == np.int32 and arrays["threshold"].dtype == np.float64


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda a: a["left"].__setitem__(a["roots"][0], 10**6),  # child out of range
        lambda a: a["feature"].__setitem__(a["roots"][0], 9),  # feature out of range
        lambda a: a["right"].__setitem__(a["roots"][0], a["roots"][0]),  # a cycle
        lambda a: a["roots"].__setitem__(1, a["roots"][0]),  # a node reached twice
    ],
)
def test_from_state_rejects_arrays_that_are_not_a_forest(corrupt) -> None:
    d, _ = _fitted(n=600, n_estimators=10)
    params, arrays = d.get_state()
    arrays = {k: v.copy() for k, v in arrays.items()}
    corrupt(arrays)
    with pytest.raises(ValueError, match="forest"):
        IsolationForestDetector.from_state(params, arrays)


_SUBPROCESS_SCORE = r"""
import sys
import numpy as np
if sys.argv[1] == "no-locator":
    # What a read-only install looks like to numba: no cache locator accepts the file, and
    # njit(cache=True) raises "cannot cache function ...: no locator available".
    import numba.core.caching as caching
    caching.CacheImpl._locator_classes = []
from edge_agent.detectors import iforest_kernels as kernels
from edge_agent.detectors import isolation_forest as iforest
rng = np.random.default_rng(0)
d = iforest.IsolationForestDetector(window=8, n_estimators=20)
d.fit(50.0 + np.cumsum(rng.normal(size=800)))
kernels.PARALLEL_MIN_ROWS = 100
xs = 50.0 + np.cumsum(rng.normal(size=300))
twin = iforest.IsolationForestDetector.from_state(*d.get_state())
batch = twin.score_many(xs)  # the parallel kernel too
seq = np.array([d.score_one(float(x)) for x in xs])
assert np.max(np.abs(batch - seq)) <= 1e-12, np.max(np.abs(batch - seq))
assert sorted(kernels._kernels) == ["perfect_batch", "perfect_batch_parallel", "perfect_one", "perfect_rows"], sorted(kernels._kernels)
print("ok", "cached" if any(k._cache.__class__.__name__ == "FunctionCache" for k in kernels._kernels.values()) else "uncached")
"""


@pytest.mark.parametrize("mode", ["cache-dir-under-a-file", "no-locator"])
def test_scores_when_the_numba_cache_is_not_writable(tmp_path, mode: str) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(blocker / "numba-cache"))  # unusable even as root
    root = Path(iforest.__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    r = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_SCORE, mode], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok")
    if mode == "no-locator":
        assert "uncached" in r.stdout
    assert not (blocker.parent / "numba-cache").exists()
