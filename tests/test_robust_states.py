"""robust on status and mode signals, and on a training window that never moved.

A status point (a pump's run state, a valve's position code) scores by whether it takes one of
the values its window showed (``robust_states.py``); a window of one value is no window at all:
the fit is put off until the series has moved (``base.NothingToLearn``).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from helpers import robust_alarm_events

from edge_agent import detectors
from edge_agent.config import AgentConfig
from edge_agent.detectors.base import NothingToLearn
from edge_agent.detectors.robust import RobustDetector
from edge_agent.detectors.robust_states import discrete_states
from edge_agent.model_store import ModelStore
from edge_agent.pipeline import InlineTrainer, Pipeline

T0 = 1.7e9


def status(n: int, seed: int, mean_dwell: float = 200.0, states: tuple[float, ...] = (0.0, 1.0)) -> np.ndarray:
    """A status point: each state held for an exponential number of readings, then the next."""
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    i = k = 0
    while i < n:
        d = int(rng.exponential(mean_dwell)) + 2
        x[i:i + d] = states[k % len(states)]
        i += d
        k += 1
    return x


def test_a_pump_status_whose_states_last_hundreds_of_readings_raises_nothing() -> None:
    # Scored as a measurement (before robust_states), these three series raised 10 alarms
    # (stuck, level shifts, a drift: long dwells): of seeds 1-11, the nine whose window saw
    # both states, the three that raised any.
    raised = []
    for seed in (1, 7, 11):
        x = status(12_500, seed)
        assert np.unique(x[:500]).size == 2  # (each window saw both states)
        raised += [e for e in robust_alarm_events(x) if e[1] == "raised"]
    assert raised == []


def test_a_value_the_status_never_takes_is_alarmed_held_and_explained() -> None:
    x = status(3000, 1)
    x[1500:1530] = 0.5  # a transmitter failing to mid-scale
    events = robust_alarm_events(x)
    assert [(i, state, kind) for i, state, kind, _ in events] == [(1500, "raised", "out_of_range"), (1539, "cleared", None)]
    assert "0.5 is none of the values this status signal takes (0, 1)" in events[0][3]


@pytest.mark.parametrize(("name", "window"), [
    ("whole degrees sitting at 20 and 21", np.repeat([20.0, 21.0, 20.0, 21.0], 125)),
    ("a measurement flipping at a quantum's boundary", np.tile([0.0, 1.0], 250)),
    ("a measurement idle at 0 with rare readings off it", np.where(np.arange(500) % 97 == 5, np.arange(500) * 1e3, 0.0)),
    ("five values", np.repeat([0.0, 1.0, 2.0, 3.0, 4.0], 100)),
])
def test_measurements_are_not_taken_for_status_signals(name: str, window: np.ndarray) -> None:
    assert discrete_states(window) == (), name


def test_status_signals_are_recognised() -> None:
    assert discrete_states(status(500, 1)) == (0.0, 1.0)
    assert discrete_states(status(500, 3, 60.0, (1.0, 0.0, 2.0))) == (0.0, 1.0, 2.0)  # a valve: closed, travelling, open
    assert discrete_states(status(500, 3, 60.0, (4.0, 20.0))) == (4.0, 20.0)  # a 4-20 mA contact


def test_a_status_model_round_trips_through_the_store_and_accepts_a_new_state(tmp_path) -> None:
    d = RobustDetector()
    d.fit(status(500, 1))
    assert d.states and d.name == "robust"
    store = ModelStore(tmp_path / "models", fsync=False)
    store.save("s", d, n_samples=500)
    model, errors = store.load_active("s")
    assert errors == [] and model.detector.states == (0.0, 1.0)
    b = model.detector
    assert b.score_one(2.0) >= b.threshold
    b.rebaseline()  # accepted: the value is a state from now on
    assert b.states == (0.0, 1.0, 2.0) and b.score_one(2.0) == 0.0
    # a refit on a measurement's window makes it a measurement's model again
    b.fit(20.0 + np.random.default_rng(0).normal(0.0, 1.0, 500))
    assert type(b) is RobustDetector and b.states == ()
    params, _ = b.get_state()
    assert json.loads(json.dumps(params))["states"] == []


def test_a_stored_model_with_bad_states_is_refused() -> None:
    d = RobustDetector()
    d.fit(status(500, 1))
    params, arrays = d.get_state()
    for bad in ([1.0], [0.0, float("nan")], [0.0] * 40, "01"):
        with pytest.raises(ValueError, match="states"):
            RobustDetector.from_state({**params, "states": bad}, arrays)
    del params["states"]  # a model stored before them is a measurement's
    assert type(RobustDetector.from_state(params, arrays)) is RobustDetector


def test_a_window_of_one_value_is_nothing_to_learn_from() -> None:
    with pytest.raises(NothingToLearn, match="holds one value"):
        RobustDetector().fit(np.full(500, 45.0))
    assert issubclass(NothingToLearn, ValueError)  # (the HTTP fit and the fit command refuse it as bad input)
    assert detectors.create("robust", {}).threshold == 1.0


def test_a_machine_idle_while_the_agent_started_is_learned_once_it_runs(caplog) -> None:
    # 700 readings of one value, then the machine runs. A model fitted on the idle window
    # scored the start as a 1e9-scale spike, never learned from it, and held that alarm to
    # the end of the 4,700 readings.
    rng = np.random.default_rng(5)
    x = np.concatenate([np.full(700, 21.0), 50.0 + rng.normal(0.0, 0.5, 4000)])
    cfg = AgentConfig.model_validate({"detector": {"name": "robust"}, "alarms": {"accept_after_s": None}})
    events: list = []
    pipe = Pipeline(cfg, InlineTrainer(), events.append)
    with caplog.at_level(logging.INFO, logger="edge_agent.pipeline"):
        for i, v in enumerate(x.tolist()):
            pipe.process("s", v, T0 + i * 60.0)
    assert pipe.n_fit_deferred == 1 and pipe.n_fit_failed == 0 and pipe.last_fit_error is None
    assert any("no model yet" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    model = pipe.series["s"].model
    assert model is not None and model.meta["n_samples"] == 500  # fitted on readings 500-999, the start in it
    assert events == []
