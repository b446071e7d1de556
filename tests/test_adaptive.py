"""AdaptiveDetector: spikes alarm, drift and level shifts are absorbed, flat signals are safe."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest

from edge_agent import detectors
from edge_agent.detectors import adaptive
from edge_agent.detectors.adaptive import AdaptiveDetector


def _fitted(train: np.ndarray, **params) -> AdaptiveDetector:
    d = AdaptiveDetector(**params)
    d.fit(train)
    return d


def _noise(n: int, seed: int = 0, level: float = 20.0, sd: float = 1.0) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0.0, sd, n)


def test_spike_alarms_and_normal_noise_does_not() -> None:
    d = _fitted(_noise(500))
    normal = d.score_many(_noise(2000, seed=1))
    # Only the range rule can fire on Gaussian noise (a new extreme well past the range seen
    # so far): a handful at most, never a flood.
    assert (normal >= d.threshold).sum() <= 3
    assert d.score_one(40.0) >= d.threshold


def test_slow_drift_is_absorbed() -> None:
    d = _fitted(_noise(500))
    # +30 over 5000 readings: ten times the training spread, but gradual.
    drift = _noise(5000, seed=2) + np.linspace(0.0, 30.0, 5000)
    scores = d.score_many(drift)
    # The EWMA follows the level; only the range rule may fire as the drift sets new records
    # (a few readings in 5000, where a frozen mean +- k sigma alarms on nearly all of them).
    assert (scores >= d.threshold).sum() <= 10
    assert d.mean == pytest.approx(50.0, abs=2.0)


def test_level_shift_alarms_then_settles() -> None:
    d = _fitted(_noise(500))
    shifted = _noise(3000, seed=3, level=35.0)
    scores = d.score_many(shifted)
    assert scores[0] >= d.threshold  # the step itself is news
    assert (scores[-1000:] >= d.threshold).sum() == 0  # the new level is not, without a retrain


def test_flat_and_quantised_signals_do_not_flood() -> None:
    flat = _fitted(np.full(500, 7.0))
    assert flat.score_many(np.full(1000, 7.0)).max() == 0.0
    assert flat.score_one(8.0) >= flat.threshold  # any change from a dead-flat signal is news
    quantised = np.round(_noise(500, seed=4, sd=0.3))  # mostly 20, sometimes 19/21
    q = _fitted(quantised)
    later = np.round(_noise(3000, seed=5, sd=0.3))
    assert (q.score_many(later) >= q.threshold).sum() <= 3


def test_noisy_series_calibrates_to_its_own_surprises() -> None:
    rng = np.random.default_rng(6)
    heavy = 100.0 + rng.standard_t(2, 6000) * 3.0  # heavy tails: big z-scores are routine
    d = _fitted(heavy[:500])
    scores = d.score_many(heavy[500:])
    fixed = (np.abs(heavy[500:] - 100.0) / heavy[:500].std() >= d.k_min).sum()
    # The self-calibrated score alarms far less often than a fixed k_min z-rule would.
    assert (scores >= d.threshold).sum() < fixed / 3


def test_score_many_equals_score_one_and_state_round_trip() -> None:
    train, later = _noise(500), _noise(1000, seed=7) + np.linspace(0, 5, 1000)
    a, b = _fitted(train), _fitted(train)
    seq = np.array([a.score_one(float(x)) for x in later[:500]])
    np.testing.assert_array_equal(b.score_many(later[:500]), seq)
    params, arrays = a.get_state()
    back = AdaptiveDetector.from_state(json.loads(json.dumps(params)), arrays)
    np.testing.assert_array_equal(back.score_many(later[500:]), a.score_many(later[500:]))


def test_registered_and_params_checked() -> None:
    # The default until robust replaced it; still registered, so its stored models load.
    assert "adaptive" in detectors.REGISTRY and detectors.DEFAULT == "robust"
    assert isinstance(detectors.create("adaptive", {"k_min": 5}), AdaptiveDetector)
    with pytest.raises(ValueError, match="alpha"):
        AdaptiveDetector(alpha=2.0)
    lo, hi = _fitted(_noise(500)).band()
    assert lo < 20.0 < hi


def test_doctest() -> None:
    assert doctest.testmod(adaptive).failed == 0


def test_a_model_stored_by_an_earlier_agent_still_loads_scores_and_explains(tmp_path) -> None:
    """Gateways upgraded from the release whose default was adaptive keep their models: the
    files below are what that release wrote (format 1, params only, no arrays)."""
    from edge_agent.config import AgentConfig
    from edge_agent.model_store import ModelStore
    from edge_agent.pipeline import InlineTrainer, Pipeline

    vdir = tmp_path / "models" / "m1%2Ftemp" / "v000001"
    vdir.mkdir(parents=True)
    (vdir.parent / "series.json").write_text(json.dumps({"series": "m1/temp"}))
    (vdir.parent / "ACTIVE").write_text("1\n")
    params = {"alpha": 0.005, "k_min": 7.0, "surprise": 1.1, "memory": 0.9999, "margin": 0.05, "rel_floor": 0.01,
              "threshold": 1.0, "mean": 20.0, "var": 1.0, "lo": 17.0, "hi": 23.0, "z_peak": 3.0}
    (vdir / "meta.json").write_text(json.dumps({"format": 1, "series": "m1/temp", "detector": "adaptive", "params": params,
                                                "threshold": 1.0, "trained_at": 0, "n_samples": 500, "stats": {}, "version": 1}))
    model, errors = ModelStore(tmp_path / "models").load_active("m1/temp")
    assert errors == [] and model is not None and model.detector.name == "adaptive"
    events: list = []
    pipe = Pipeline(AgentConfig.model_validate({"detector": {"min_train_samples": 500}}), InlineTrainer(), events.append)
    pipe.adopt("m1/temp", model)
    for i, v in enumerate([20.1, 19.8, 60.0]):
        pipe.process("m1/temp", v, 1000.0 + i)
    (ev,) = events
    assert (ev.state, ev.detector, ev.kind, ev.direction) == ("raised", "adaptive", "out_of_range", "up")
