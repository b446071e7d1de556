"""What the annunciator (``annunciator.py``) keeps per alarm: conditions, shelves, the alarm rate,
and who owns them.

An alarm condition's **owner** is a series or a machine (issue 14: a machine is one more kind of
condition owner, with the same lifecycle through the same code). The annunciator keys its
conditions and shelves by the owner's **key**, the key the outbox tables already use: a series'
id, or ``machine_key(machine id)`` (``machine\\0<id>``: no series id can hold a NUL, so no series
can take a machine's place). Documents name the owner plainly: ``series`` or ``machine``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edge_agent.priority import Priority

ACTIVE_UNACKED, ACTIVE_ACKED, CLEARED_UNACKED = "active_unacked", "active_acked", "cleared_unacked"
STATES = (ACTIVE_UNACKED, ACTIVE_ACKED, CLEARED_UNACKED)
SERIES, MACHINE = "series", "machine"


# ---- owners ---------------------------------------------------------------------------------
# machine_set.py defines the machine key; imported on use so that a series-only agent (and the
# front ends importing this module) does not load the machine detectors.
def owner_key(series: str | None = None, machine: str | None = None) -> str:
    """The key of a series' (``series``) or a machine's (``machine``) conditions and shelve."""
    if machine is not None:
        from edge_agent.machines.machine_set import machine_key

        return machine_key(machine)
    if series is None:
        raise ValueError("an alarm owner is a series or a machine")
    return series


def owner_of(key: str) -> tuple[str, str]:
    """``(SERIES, id)`` or ``(MACHINE, id)`` for a key of ``owner_key``."""
    from edge_agent.machines.machine_set import machine_of_key

    machine = machine_of_key(key)
    return (SERIES, key) if machine is None else (MACHINE, machine)


def key_of_doc(doc: dict[str, Any]) -> str | None:
    """The owner key of an alarm document (a series' or a machine's payload); None if it names neither."""
    machine = doc.get("machine")
    if isinstance(machine, str):
        return owner_key(machine=machine)
    series = doc.get("series")
    return series if isinstance(series, str) else None


def describe(key: str) -> str:
    """``series 'm1/temp'`` or ``machine 'line1/p1'``, for logs and answers."""
    kind, oid = owner_of(key)
    return f"{kind} {oid!r}"


# ---- conditions -----------------------------------------------------------------------------
@dataclass(slots=True)
class Condition:
    """One alarm of one owner as the operator sees it. ``raised`` is the raise's alarm message."""

    raised: dict[str, Any]
    raised_at: float  # wall time the raise was decided
    active: bool = True
    cleared_ts: float | None = None  # reading time it ended
    end: str | None = None  # "cleared" | "accepted"
    acked_at: float | None = None
    acked_by: str | None = None
    ack_note: str | None = None
    announced: bool = True  # published on the alarm topic (False: raised while shelved)

    @property
    def state(self) -> str:
        if self.active:
            return ACTIVE_ACKED if self.acked_at is not None else ACTIVE_UNACKED
        return CLEARED_UNACKED

    @property
    def priority(self) -> int:
        return int(self.raised.get("priority", 2))

    def view(self) -> dict[str, Any]:
        """What the alarm list, the state topic and the status page show. ``series`` or
        ``machine`` names the owner (the other is null); a machine's alarm has its ``score``
        and ``threshold`` and its three leading ``sensors`` where a series' has a value."""
        r = self.raised
        out = {
            "series": r.get("series"), "machine": r.get("machine"), "condition": r.get("limit") or "model",
            "source": r.get("source", "model"), "limit": r.get("limit"), "alert_id": r["alert_id"], "seq": r.get("seq"),
            "state": self.state, "active": self.active, "acked": self.acked_at is not None, "priority": self.priority,
            "priority_name": Priority(self.priority).label, "raised_ts": r["ts"], "raised_at": self.raised_at,
            "value": r.get("value"), "unit": r.get("unit"), "kind": r.get("kind"), "direction": r.get("direction"),
            "expected": r.get("expected"), "setpoint": r.get("setpoint"), "score": r.get("score"), "threshold": r.get("threshold"),
            "message": r.get("message"), "cleared_ts": self.cleared_ts, "end": self.end, "acked_at": self.acked_at,
            "acked_by": self.acked_by, "ack_note": self.ack_note, "announced": self.announced,
        }
        if r.get("machine") is not None:
            out["sensors"] = list(r.get("sensors") or [])[:3]
        return out


@dataclass(slots=True)
class Shelve:
    """An operator's shelve of one owner: ``series`` or ``machine`` is set, the other None."""

    series: str | None
    since: float
    until: float
    reason: str
    by: str
    suppressed: int = 0  # raises not published while shelved
    machine: str | None = None

    @classmethod
    def of(cls, key: str, since: float, until: float, reason: str, by: str, suppressed: int = 0) -> Shelve:
        kind, oid = owner_of(key)
        if kind == MACHINE:
            return cls(None, since, until, reason, by, suppressed, machine=oid)
        return cls(oid, since, until, reason, by, suppressed)

    @property
    def key(self) -> str:
        return owner_key(self.series, self.machine)

    def view(self) -> dict[str, Any]:
        return asdict(self)


class AlarmRate:
    """Alarms in the last ``minutes`` minutes, counted per minute of the wall clock."""

    def __init__(self, minutes: int = 10, clock: Callable[[], float] = time.time) -> None:
        self.minutes = minutes
        self.clock = clock
        self.buckets: deque[list[int]] = deque()  # [minute, count], oldest first

    def add(self, n: int = 1) -> None:
        minute = int(self.clock() // 60)
        if self.buckets and self.buckets[-1][0] == minute:
            self.buckets[-1][1] += n
        else:
            self.buckets.append([minute, n])
        self._trim(minute)

    def _trim(self, minute: int) -> None:
        while self.buckets and self.buckets[0][0] <= minute - self.minutes:
            self.buckets.popleft()

    def count(self) -> int:
        self._trim(int(self.clock() // 60))
        return sum(c for _, c in self.buckets)
