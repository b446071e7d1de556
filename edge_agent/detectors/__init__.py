"""Detector registry: the one place where detectors are made known to the agent.

To add a detector, write one module with one class following ``base.Detector`` and add it
to ``REGISTRY`` below.
"""

from __future__ import annotations

from typing import Any

from edge_agent.detectors.adaptive import AdaptiveDetector
from edge_agent.detectors.base import Detector
from edge_agent.detectors.isolation_forest import IsolationForestDetector
from edge_agent.detectors.robust import RobustDetector
from edge_agent.detectors.statistical import StatisticalDetector

REGISTRY: dict[str, type] = {
    StatisticalDetector.name: StatisticalDetector,
    IsolationForestDetector.name: IsolationForestDetector,
    AdaptiveDetector.name: AdaptiveDetector,
    RobustDetector.name: RobustDetector,
}

# robust: a model of normal that faults cannot rewrite, alarms held while a fault lasts
# (docs/detectors.md has why, and its figures on NAB, SKAB and the fault-scenario suite).
# adaptive was the default before; its stored models keep loading and scoring.
DEFAULT = "robust"


class UnknownDetector(ValueError):
    pass


def detector_class(name: str) -> type:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownDetector(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def create(name: str, params: dict[str, Any] | None = None) -> Detector:
    """A new, unfitted detector. Bad params raise ValueError/TypeError naming the param."""
    cls = detector_class(name)
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        raise TypeError(f"detector {name!r}: {exc}") from None


__all__ = ["Detector", "REGISTRY", "DEFAULT", "create", "detector_class", "UnknownDetector"]
