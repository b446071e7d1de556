"""The machine-detector protocol: one model over the rows of a machine's sensors.

A per-series detector (``edge_agent.detectors``) scores one number at a time
(``score_one(x)``). A machine detector scores a *row*: the latest value of each of a
machine's sensors at one moment, in the fixed sensor order it was fitted on. As for the
per-series detectors, scoring is separate from the decision: ``score_row`` returns a score,
and the machine is anomalous when ``score >= detector.threshold``.

Lifecycle, per machine:

1. ``Detector(**params)`` (``machines.detector.params`` in the config).
2. ``fit(rows, ts, sensors)`` once, on the first ``machines.min_train_rows`` complete rows
   (``rows`` is ``(n, len(sensors))`` float64, ``ts`` the rows' epoch seconds). Returns
   training statistics for the model's metadata.
3. ``score_row(values, dt)`` for every later complete row, in arrival order; ``values`` is a
   sequence of floats in ``sensors`` order, ``dt`` the seconds since the previous row.
   Streaming detectors update their state here (score first, then learn).
4. ``contributions()`` explains the row last scored: per sensor its value, the value the
   model expected, the signed deviation, and the sensor's part of the score, ranked. It is
   called only when an alarm changes state or someone asks (not per row).
5. ``rebaseline()`` takes the current behaviour as normal (an alarm accepted after
   ``machines.alarms.accept_after_s``, or by an operator).
6. ``get_state()`` / ``from_state()`` round-trip through JSON-safe params and numpy arrays
   (stored as ``.npz`` with ``allow_pickle=False``): nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class Contribution:
    """One sensor's part in a machine score."""

    sensor: str
    value: float  # the sensor's latest reading
    expected: float  # what the model expected it to read
    deviation: float  # signed, in the sensor's units (smoothed: see the detector)
    z: float  # signed deviation in units of its normal spread; |z| >= the detector's k alone is anomalous
    part: float  # the sensor's share of the score (>= 0); ranks the sensors
    # What the deviation is, in an operator's words: "high" / "low" (its level, or what the
    # other sensors say it should read), "rising fast" / "falling fast" (its slope).
    kind: str = ""

    @property
    def what(self) -> str:
        """``kind``, or "high" / "low" by the sign of ``z`` when the detector gave none."""
        return self.kind or ("high" if self.z > 0 else "low")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class MachineDetector(Protocol):
    name: ClassVar[str]
    threshold: float
    sensors: list[str]

    def fit(self, rows: np.ndarray, ts: np.ndarray, sensors: Sequence[str]) -> dict[str, Any]: ...

    def score_row(self, values: Sequence[float], dt: float) -> float: ...

    def contributions(self) -> list[Contribution]: ...

    def rebaseline(self) -> None: ...

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> MachineDetector: ...
