"""The detector protocol: every detector is one small class in its own module.

A detector turns readings into *scores*; whether a score is anomalous is a separate,
explicit decision (``score >= detector.threshold``), so scoring and the alarm threshold can
be tuned, plotted and tested apart.

Lifecycle, per series:

1. ``Detector(**params)``: params come from ``detector.params`` in the config or a ``fit``
   command; an unknown param is a ``TypeError`` naming it.
2. ``fit(values)`` once, on the first ``min_train_samples`` readings (or a retrain).
   Returns training statistics that end up in the model's metadata.
3. ``score_one(x)`` for every later reading, in arrival order. Streaming detectors may update
   their own state here (score first, then learn), so the call order matters.
   ``score_many(xs)`` is the vectorised equivalent of calling ``score_one`` on each in order.
4. ``get_state()`` / ``from_state()`` round-trip the fitted model through JSON-safe params and
   plain numpy arrays (stored as ``.npz`` with ``allow_pickle=False``): nothing is unpickled.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Detector(Protocol):
    name: ClassVar[str]
    threshold: float

    def fit(self, values: np.ndarray) -> dict[str, Any]: ...

    def score_one(self, x: float) -> float: ...

    def score_many(self, xs: np.ndarray) -> np.ndarray: ...

    def band(self) -> tuple[float, float] | None:
        """The value range that scores below the threshold right now (for plots), if it has one."""
        ...

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Detector: ...
