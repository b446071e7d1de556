"""IsolationForestDetector: our flattened-tree kernel equals sklearn, state round-trips safely."""

from __future__ import annotations

import doctest
import io

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from edge_agent.detectors import create
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
