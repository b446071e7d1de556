"""The text of alarm messages: one line an operator reads without a plot.

Kept apart from the pipeline (which decides) and the agent (which sends): the same wording
serves the payload's ``message``, the demo's printout and, later, machine-level alarms.
"""

from __future__ import annotations

from edge_agent.detectors.base import Explanation


def number(x: float) -> str:
    return f"{x:.6g}"


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def raised(exp: Explanation | None, value: float, score: float, threshold: float) -> str:
    """``level shift up: the level is +3.1 off normal, value 27.3, expected 19.2 to 20.8 (score 1.9 x threshold)``

    >>> raised(Explanation("spike", "down", 9.5, 10.5, "6.2 noise scales from the expected 10"), 4.0, 1.5, 1.0)
    'spike down: 6.2 noise scales from the expected 10, value 4, expected 9.5 to 10.5 (score 1.5 x threshold)'
    """
    ratio = f"score {score / threshold:.2g} x threshold" if threshold > 0 else f"score {score:.3g}"
    if exp is None:
        return f"value {number(value)}, {ratio}"
    what = exp.kind.replace("_", " ") + (f" {exp.direction}" if exp.direction else "")
    detail = f" {exp.detail}," if exp.detail else ""
    return f"{what}:{detail} value {number(value)}, expected {number(exp.expected_low)} to {number(exp.expected_high)} ({ratio})"


def cleared(held_s: float, peak: float) -> str:
    return f"back to normal after {duration(held_s)} (peak score {peak:.2g} x threshold)"


def accepted(held_s: float, by: str) -> str:
    """An alarm ended because its level was accepted as the new normal: by ``by`` (a command,
    or the acceptance time ``alarms.accept_after_s``)."""
    return f"accepted as the new normal by {by} after {duration(held_s)} in alarm; the model now learns from the current behaviour"


LIMIT_NAMES = {"hihi": "HiHi", "hi": "Hi", "lo": "Lo", "lolo": "LoLo"}


def _with_unit(x: float, unit: str | None) -> str:
    return f"{number(x)} {unit}" if unit else number(x)


def limit_raised(limit: str, setpoint: float, value: float, unit: str | None) -> str:
    """``HiHi limit 9.5 bar reached: value 9.7 bar``

    >>> limit_raised("lo", 1.0, 0.8, None)
    'Lo limit 1 reached: value 0.8'
    """
    return f"{LIMIT_NAMES.get(limit, limit)} limit {_with_unit(setpoint, unit)} reached: value {_with_unit(value, unit)}"


def limit_cleared(limit: str, setpoint: float, deadband: float, held_s: float, unit: str | None) -> str:
    back = f" (deadband {_with_unit(deadband, unit)})" if deadband else ""
    return f"back inside the {LIMIT_NAMES.get(limit, limit)} limit {_with_unit(setpoint, unit)}{back} after {duration(held_s)}"
