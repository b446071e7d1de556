"""Operations an operator or a remote system asks of the running agent, shared by the signed
commands (``commands.py``) and the HTTP endpoints (``http/``): each checks its arguments in
one place and answers plain data, so the two front ends say the same thing in the same words.

Operators' alarm actions (``annunciator.py`` keeps the state):

- ``ack``: acknowledge the unacknowledged alarms of a series (all of them, those of one
  ``condition`` -- ``model`` or a limit ``hihi``/``hi``/``lo``/``lolo`` -- or one ``alert_id``).
- ``shelve``: hold back a series' new alarms for ``duration_s`` (at most
  ``alarms.max_shelve_s``) with a ``reason``; it is still scored, its would-be alarms counted.
- ``unshelve``: end a shelve now; alarms raised under it and still active are published then.

The front ends pass the narrow ``Operator`` below, never the agent: neither imports it.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from edge_agent.annunciator import Annunciator
from edge_agent.limits import NAMES as LIMIT_NAMES

CONDITIONS = ("model", *LIMIT_NAMES)
MAX_REASON = 500
MAX_BY = 100


class OperationError(ValueError):
    """Arguments an operation cannot act on; the message says which and why."""


class NothingToDo(OperationError):
    """Valid arguments, but nothing in that state: no unacknowledged alarm, no shelve."""


class Operator(Protocol):
    """What the alarm operations need of the running agent."""

    annunciator: Annunciator
    cfg: Any


def _series(ann: Annunciator, series: Any) -> str:
    if not isinstance(series, str) or not series or len(series) > 1024:
        raise OperationError("series must be a series id (1 to 1024 characters)")
    return series


def _text(name: str, value: Any, limit: int, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise OperationError(f"{name} must be a{' non-empty' if required else ''} string")
    if len(value) > limit:
        raise OperationError(f"{name} is longer than {limit} characters")
    return value.strip()


def ack(agent: Operator, series: Any, condition: Any = None, alert_id: Any = None, by: str = "", note: Any = None) -> dict[str, Any]:
    sid = _series(agent.annunciator, series)
    if condition is not None and condition not in CONDITIONS:
        raise OperationError(f"condition must be one of {', '.join(CONDITIONS)}")
    if alert_id is not None and (not isinstance(alert_id, str) or len(alert_id) > 64):
        raise OperationError("alert_id must be a string (an alarm's alert_id)")
    acked = agent.annunciator.ack(sid, condition, alert_id, by=by, note=_text("note", note, MAX_REASON))
    if not acked:
        which = f" of condition {condition!r}" if condition else f" with alert_id {alert_id!r}" if alert_id else ""
        raise NothingToDo(f"series {sid!r} has no unacknowledged alarm{which}")
    return {"series": sid, "acknowledged": acked}


def shelve(agent: Operator, series: Any, duration_s: Any, reason: Any, by: str = "") -> dict[str, Any]:
    sid = _series(agent.annunciator, series)
    longest = float(agent.cfg.alarms.max_shelve_s)
    if isinstance(duration_s, bool) or not isinstance(duration_s, int | float) or not math.isfinite(duration_s) \
            or not 0 < duration_s <= longest:
        raise OperationError(f"duration_s must be a number of seconds in (0, {longest:g}] (alarms.max_shelve_s)")
    why = _text("reason", reason, MAX_REASON, required=True)
    return {"series": sid, "shelved": agent.annunciator.shelve(sid, float(duration_s), why, by)}


def unshelve(agent: Operator, series: Any, by: str = "") -> dict[str, Any]:
    sid = _series(agent.annunciator, series)
    ended = agent.annunciator.unshelve(sid, by)
    if ended is None:
        raise NothingToDo(f"series {sid!r} is not shelved")
    return {"series": sid, "unshelved": ended}


def alarms(agent: Operator, offset: int = 0, limit: int = 1000) -> dict[str, Any]:
    """The alarm list an operator sees (active first, by priority), shelves and the rate."""
    ann = agent.annunciator
    rows = ann.listing()
    return {
        "total": len(rows),
        "offset": offset,
        "alarms": [c.view() for c in rows[offset:offset + limit]],
        "shelved": [s.view() for s in ann.shelves.values()],
        "rate_10min": ann.rate.count(),
        "flood": ann.flood(),
        "flood_per_10min": ann.flood_at,
        "suppressed_10min": ann.suppressed_rate.count(),
    }


def who(front: str, by: Any) -> str:
    """``by`` as recorded: the operator's name a request gave, and the front end it came by."""
    name = _text("by", by, MAX_BY) if by is not None else ""
    return f"{name} ({front})" if name else front
