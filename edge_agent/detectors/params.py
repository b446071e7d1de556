"""Detector parameters checked in the config's words, before any detector is built.

``detectors.create`` builds a detector from ``params`` and lets Python's own errors through
(``__init__() got an unexpected keyword argument 'k'``, or a comparison of a str with a
float). A plant engineer wrote ``detector.params`` in YAML; this module answers in those
terms: an unknown parameter with the known ones and a "did you mean", a value of the wrong
type, or the detector's own range message tied to the parameter it names.

The known parameters and their types come from the detector's ``__init__`` signature (the
defaults' types), so a new detector needs nothing here.
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Any


class ParamProblems(ValueError, TypeError):
    """Bad ``params`` for one detector: ``problems`` lists ``(param name or "", message)``.

    Both a ValueError (what pydantic reports as a validation error) and a TypeError (what the
    detector protocol promised for an unknown param, before these checks)."""

    def __init__(self, detector: str, problems: list[tuple[str, str]]):
        self.detector = detector
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in problems))


def signature_params(cls: type) -> dict[str, Any]:
    """Parameter name -> default (``inspect.Parameter.empty`` when required) of ``cls(...)``."""
    declared = getattr(cls, "init_params", None)  # (a compiled class's: inspect cannot read its signature)
    if declared is not None:
        return dict(declared)
    sig = inspect.signature(cls.__init__)
    return {
        name: p.default
        for name, p in sig.parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _type_problem(value: Any, default: Any) -> str | None:
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        if isinstance(default, int) and not isinstance(default, bool) and not isinstance(value, int):
            return "must be a whole number"
        if not math.isfinite(value):
            return "must be a finite number"
        return None
    if isinstance(default, str) and not isinstance(value, str):
        return "must be a string"
    return None


def check(name: str, cls: type, params: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Every problem with ``params`` for detector ``name`` (class ``cls``); empty when it builds."""
    params = params or {}
    known = signature_params(cls)
    problems: list[tuple[str, str]] = []
    for key, value in params.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append((key, f"unknown parameter {key!r} for detector {name!r} (known: {', '.join(known)}){hint}"))
            continue
        wrong = _type_problem(value, known[key])
        if wrong:
            problems.append((key, f"{wrong} (got {value!r})"))
    if problems:
        return problems
    try:
        cls(**params)
    except (ValueError, TypeError) as exc:
        # The detectors' own range checks start with the parameter's name ("alpha=2 is out of
        # range", "k must be a positive number"): tie the message to that parameter.
        msg = str(exc)
        head = msg.replace("=", " ").split(" ", 1)[0]
        return [(head, msg) if head in known else ("", msg)]
    return []
