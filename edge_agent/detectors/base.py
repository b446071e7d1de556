"""The detector protocol: every detector is one small class in its own module.

A detector turns readings into *scores*; whether a score is anomalous is a separate,
explicit decision (``score >= detector.threshold``), so scoring and the alarm threshold can
be tuned, plotted and tested apart.

Lifecycle, per series:

1. ``Detector(**params)``: params come from ``detector.params`` in the config or a ``fit``
   command; an unknown param is a ``TypeError`` naming it.
2. ``fit(values, ts)`` once, on the first ``min_train_samples`` readings (or a retrain), with
   their timestamps when known (None otherwise). Returns training statistics that end up in
   the model's metadata.
3. ``score_one(x, ts)`` for every later reading, in arrival order, with the reading's own
   timestamp (epoch seconds; None when there is none, e.g. ``POST /predict``). Streaming
   detectors may update their own state here (score first, then learn), so the call order
   matters. ``score_many(xs, ts)`` is the vectorised equivalent of ``score_one`` on each in order.
4. ``get_state()`` / ``from_state()`` round-trip the fitted model through JSON-safe params and
   plain numpy arrays (stored as ``.npz`` with ``allow_pickle=False``): nothing is unpickled.

Optional, used by the alarm path when present:

* ``explain(x) -> Explanation``: why the reading ``x`` just scored as it did (kind of deviation,
  direction, the range expected at that moment). Called only when an alarm is raised, right
  after ``score_one(x)``; never per reading.
* ``rebaseline()``: accept the behaviour of the recent readings as the new normal, in place
  (an alarm accepted after ``alarms.accept_after_s``, or the ``rebaseline`` command). A detector
  without it is refitted on the readings held in alarm instead.
* ``gap_s`` (required, ``math.inf`` for none) and ``score_after_gap(x, ts, gap_s)``: a reading
  arriving more than ``gap_s`` seconds after the one before (a sensor offline, a link down) is
  scored by ``score_after_gap`` instead of ``score_one``, told how long the silence was (robust
  runs its forecasts on through it).
* ``notice``: a line for the operator about something that is not an alarm (robust: the series
  moved to an operating level a rebaseline accepted, so readings there raise nothing). The
  pipeline looks at it every few readings, logs and counts it, and sets it back to None.
* ``streaming = True`` (class attribute): the state changes with every reading, so
  ``explain`` is only right for the reading just scored; batches are then scored one reading
  at a time by the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

# What kind of deviation an alarm is about (``Explanation.kind``, the alarm payload's ``kind``).
SPIKE = "spike"  # one reading (or a few) far from what was expected
LEVEL_SHIFT = "level_shift"  # the level moved and stays moved
DRIFT = "drift"  # the level moves away steadily, faster than the series' normal trend
VARIANCE = "variance"  # the noise grew
STUCK = "stuck"  # the same value repeated far longer than this series ever repeats one
OUT_OF_RANGE = "out_of_range"  # outside the range learned as normal
SHAPE = "shape"  # an unusual combination of value and recent shape (isolation forest)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a reading is anomalous, in terms an operator reads without a plot."""

    kind: str
    direction: str | None  # "up" | "down" | None (e.g. stuck)
    expected_low: float  # the range of values expected at that moment
    expected_high: float
    detail: str = ""  # one short clause with the figures behind the kind, e.g. "for 120 readings"


@runtime_checkable
class Detector(Protocol):
    name: ClassVar[str]
    threshold: float

    def fit(self, values: np.ndarray, ts: np.ndarray | None = None) -> dict[str, Any]: ...

    def score_one(self, x: float, ts: float | None = None) -> float: ...

    def score_many(self, xs: np.ndarray, ts: np.ndarray | None = None) -> np.ndarray: ...

    def band(self) -> tuple[float, float] | None:
        """The value range that scores below the threshold right now (for plots), if it has one."""
        ...

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Detector: ...


class NothingToLearn(ValueError):
    """A training window a detector can learn no normal from (one value throughout: a machine
    idle while the agent started). Not a failure: the series tries again on the next window."""
