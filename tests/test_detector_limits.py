"""The invariant every registered detector keeps for values ingest lets through (issue 15,
finding 5): for any readings with |x| <= ingest.max_abs_value, fitting, scoring and the saved
state stay finite, and a huge value does not leave the detector unable to alarm.

Checked at MAX_ABS_LIMIT, the largest max_abs_value the config allows, so that it holds for
every configuration. A detector added to the registry is checked without further ado.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent import detectors
from edge_agent.config import MAX_ABS_LIMIT

# Params that keep the slow detectors quick here; the invariant does not depend on them.
PARAMS = {"isolation_forest": {"n_estimators": 10, "max_samples": 32}}
NAMES = sorted(detectors.REGISTRY)


def finite_state(det: detectors.Detector) -> None:
    params, arrays = det.get_state()

    def walk(v: object) -> None:
        if isinstance(v, float):
            assert math.isfinite(v), params
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(params)
    for name, a in arrays.items():
        if a.dtype.kind == "f":
            assert np.isfinite(a).all(), name
    assert math.isfinite(float(det.threshold))


extreme = st.one_of(
    st.floats(-MAX_ABS_LIMIT, MAX_ABS_LIMIT, allow_nan=False),
    st.sampled_from([MAX_ABS_LIMIT, -MAX_ABS_LIMIT, 0.0, 1e-300, 1.0]),
)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(train=st.lists(extreme, min_size=32, max_size=96), stream=st.lists(extreme, min_size=1, max_size=64))
def test_fitting_and_scoring_values_up_to_the_limit_stay_finite(name: str, train: list[float], stream: list[float]) -> None:
    det = detectors.create(name, PARAMS.get(name, {}))
    try:
        det.fit(np.asarray(train, dtype=np.float64))
    except detectors.NothingToLearn:  # (robust: a window of one value teaches nothing)
        assert len(set(train)) == 1
        return
    finite_state(det)
    for x in stream:
        assert math.isfinite(det.score_one(x)), x
    assert np.isfinite(det.score_many(np.asarray(stream, dtype=np.float64))).all()
    finite_state(det)
    again = type(det).from_state(*det.get_state())
    assert math.isfinite(again.score_one(stream[0]))


@pytest.mark.parametrize("name", NAMES)
def test_a_reading_at_the_limit_leaves_the_detector_able_to_alarm(name: str) -> None:
    # Issue 15: one 1e155+ reading overflowed the adaptive detector's variance; it scored 0
    # for ever after. At the largest allowed |x| the state stays finite, and a detector that
    # scores by streaming statistics recovers within its memory. The spike afterwards is a
    # jump of the same size as the normal spread, far enough from anything seen.
    rng = np.random.default_rng(0)
    det = detectors.create(name, PARAMS.get(name, {}))
    det.fit(rng.normal(20.0, 1.0, 600))
    assert math.isfinite(det.score_one(MAX_ABS_LIMIT))
    for x in rng.normal(20.0, 1.0, 2000):
        det.score_one(float(x))
    finite_state(det)
    assert det.score_one(-MAX_ABS_LIMIT) >= det.threshold
