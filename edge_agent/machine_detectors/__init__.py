"""Machine-detector registry: the one place where machine-level detectors are made known.

Machine detectors score a *row* of a machine's sensors (``base.MachineDetector``:
``fit(rows, ts, sensors)`` / ``score_row(values, dt)`` / ``contributions()``); per-series
detectors, registered in ``edge_agent.detectors``, score one number (``score_one(x)``). The
two protocols are kept apart on purpose: a model of one reading and a model of a row are
not interchangeable, and a config naming one where the other is expected is an error.

To add one, write one module with one class following ``base.MachineDetector`` and add it
to ``REGISTRY`` below.
"""

from __future__ import annotations

from typing import Any

from edge_agent.machine_detectors.base import Contribution, MachineDetector
from edge_agent.machine_detectors.baseline_t2 import BaselineT2Detector

REGISTRY: dict[str, type] = {
    BaselineT2Detector.name: BaselineT2Detector,
}

DEFAULT = BaselineT2Detector.name


class UnknownMachineDetector(ValueError):
    pass


def detector_class(name: str) -> type:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownMachineDetector(f"unknown machine detector {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def create(name: str, params: dict[str, Any] | None = None) -> MachineDetector:
    """A new, unfitted machine detector. Bad params raise ValueError/TypeError naming the param."""
    cls = detector_class(name)
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        raise TypeError(f"machine detector {name!r}: {exc}") from None


__all__ = ["Contribution", "MachineDetector", "REGISTRY", "DEFAULT", "create", "detector_class", "UnknownMachineDetector"]
