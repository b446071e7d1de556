"""Detector registry: the one place where detectors are made known to the agent.

To add a detector, write one module with one class following ``base.Detector`` and add it
to ``REGISTRY`` below.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from typing import Any

from edge_agent.detectors import native

# Before anything imports robust: its compiled build where current, else its source (native.py).
native.select()

from edge_agent.detectors.adaptive import AdaptiveDetector
from edge_agent.detectors.base import Detector, NothingToLearn
from edge_agent.detectors.isolation_forest import IsolationForestDetector
from edge_agent.detectors.params import ParamProblems
from edge_agent.detectors.params import check as params_check
from edge_agent.detectors.robust import RobustDetector
from edge_agent.detectors.statistical import StatisticalDetector

REGISTRY: dict[str, type] = {
    StatisticalDetector.name: StatisticalDetector,
    IsolationForestDetector.name: IsolationForestDetector,
    AdaptiveDetector.name: AdaptiveDetector,
    RobustDetector.name: RobustDetector,
}

# Detectors whose packages are an optional install: name -> (pip extra, modules it provides).
# The core install runs the others; `edge-agent check-config` names the extra to install.
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    IsolationForestDetector.name: ("isolation-forest", ("sklearn", "numba")),
}

# robust: a model of normal that faults cannot rewrite, alarms held while a fault lasts
# (docs/detectors.md has why, and its figures on NAB, SKAB and the fault-scenario suite).
# adaptive was the default before; its stored models keep loading and scoring.
DEFAULT = "robust"


class UnknownDetector(ValueError):
    pass


class DetectorUnavailable(ValueError):
    """A known detector whose optional packages are not installed."""


@cache
def missing_packages(name: str) -> tuple[str, ...]:
    """The modules detector ``name`` needs that are not installed (looked up once per process)."""
    _, modules = EXTRAS.get(name, ("", ()))
    return tuple(m for m in modules if importlib.util.find_spec(m) is None)


def detector_class(name: str) -> type:
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise UnknownDetector(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    missing = missing_packages(name)
    if missing:
        extra = EXTRAS[name][0]
        raise DetectorUnavailable(
            f"detector {name!r} needs {', '.join(missing)}, which is not installed: "
            f"pip install 'edge-agent[{extra}]' (or make dev in a checkout)"
        )
    return cls


def check_params(name: str, params: dict[str, Any] | None) -> None:
    """Raise ``ParamProblems`` (a ValueError naming each bad param) unless ``params`` fit ``name``.

    Needs only the detector's class, not its optional packages: a config can be checked on a
    machine without them (``detector_class`` says what to install)."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise UnknownDetector(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    problems = params_check(name, cls, params)
    if problems:
        raise ParamProblems(name, problems)


def create(name: str, params: dict[str, Any] | None = None) -> Detector:
    """A new, unfitted detector. Bad params raise ValueError (``ParamProblems``) naming the param."""
    cls = detector_class(name)
    check_params(name, params)
    return cls(**(params or {}))


__all__ = ["Detector", "NothingToLearn", "REGISTRY", "EXTRAS", "DEFAULT", "create", "detector_class", "UnknownDetector", "DetectorUnavailable",
           "ParamProblems", "check_params"]
