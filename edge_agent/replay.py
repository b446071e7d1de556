"""Replay protection that cannot starve a live stream.

A broker restarted from its persistence file, or one redelivering an agent's unacknowledged
readings after the agent crashed, sends readings the agent has already scored, among new ones.
Scored again, an old spike raises its alarm a second time and the fresh readings after it clear
it at a reading that cleared nothing (stop 11: ``test_fault_broker_kill`` failed so in 1 of 8
runs). The first rule against it refused every reading older than its series' newest within
``ingest.replay_window_s``. It also refused live data: one reading stamped 25 minutes ahead
cost the next 400 readings, an NTP step back of 10 minutes 599 of 600, and two topics feeding
one series with clocks a little apart starved one of them for good.

What tells a replay from a live stream with a moved clock:

* **A replay is a short excursion into the past; the stream then goes on from where it was.**
  Readings behind their topic's newest are *held*, not refused. When the topic's next reading
  is at or after its newest, the held ones were a replay: refused as ``stale``.
* **A stepped clock keeps going from its new time.** When held readings keep coming, in order
  among themselves, for ``ingest.clock_step_after_s`` of receive time, and their timestamps
  advance at least half as fast as receive time (a replay delivered slowly behind a backlog
  does not), the device clock stepped back: the held readings are scored, in order, and the
  topic goes on from the new time. Nothing is lost; the readings of the first seconds after
  a step are scored up to ``clock_step_after_s`` late.
* **A topic's newest never runs ahead of receive time.** A reading stamped in the future is
  scored, but the topic's newest becomes the receive time, so it cannot hold the topic back.
* **The rule is per topic, not per series.** A broker redelivers a reading on its own topic.
  Two topics feeding one series (a series template that drops a field, e.g. the default
  ``{machine}/{sensor}`` over ``plant/{line}/...``) each keep their own clock; ingest reports
  such series loudly, because their readings are mixed into one model.

Unchanged: a reading further behind than the window is a reset device clock and is scored;
readings with the newest timestamp are scored (coarse device clocks); ``replay_window_s: 0``
scores everything. Limits: a replay of a topic's readings that is longer than
``clock_step_after_s`` of receive time and keeps pace with real time is taken for a clock
step and scored again; readings younger than a device clock's lead over the gateway's are
not caught; a held run that is never followed by another reading on its topic stays held
(counted in ``edge_agent_readings_held``).
"""

from __future__ import annotations

from array import array
from typing import Any

# Readings held over all topics at most (~40 bytes each): beyond, new ones are refused at once.
MAX_HELD = 100_000
NEVER = float("-inf")


class Held:
    """A run of readings behind their topic's newest, in order among themselves. An item is a
    reading's value, or a whole row for a message carrying several (json_multi)."""

    __slots__ = ("items", "ts", "since")

    def __init__(self, since: float) -> None:
        self.items: list[Any] = []
        self.ts = array("d")
        self.since = since  # monotonic receive time of the first


class Route:
    """What ingest keeps per topic that delivered a good reading: where it goes, and its clock."""

    __slots__ = ("sub", "sid", "newest", "held")

    def __init__(self, sub: Any, sid: str, newest: float = NEVER) -> None:
        self.sub = sub
        self.sid = sid
        self.newest = newest  # newest reading timestamp, never ahead of its receive time
        self.held: Held | None = None


class ReplayGuard:
    """The slow path of the rule above; ingest inlines the common case (a reading at or after
    its topic's newest, nothing held)."""

    def __init__(self, window_s: float, step_after_s: float, max_held: int = MAX_HELD) -> None:
        self.window = window_s
        self.step_after_s = step_after_s
        self.max_held = max_held
        self.held_total = 0
        self.n_replays = 0  # held runs refused as replays
        self.n_steps = 0  # held runs followed as clock steps

    def drop(self, r: Route) -> int:
        """The held readings were a replay: forget them, return how many (refused as stale)."""
        h = r.held
        if h is None:
            return 0
        r.held = None
        n = len(h.ts)
        self.held_total -= n
        self.n_replays += 1
        return n

    def discard(self, r: Route) -> None:
        """Forget what ``r`` holds without a verdict (its route is going away)."""
        if r.held is not None:
            self.held_total -= len(r.held.ts)
            r.held = None

    def accept(self, r: Route, item: Any, ts: float, now: float, mono: float) -> tuple[list[tuple[Any, float]], int]:
        """One reading (``item``: its value, or a row) of ``r``'s topic: returns the
        (item, ts) pairs to score now, in order, and how many were refused as stale."""
        newest = r.newest
        if not (ts < newest and newest - ts <= self.window):
            stale = self.drop(r)
            r.newest = ts if ts < now else now
            return [(item, ts)], stale
        stale = 0
        h = r.held
        if h is not None and ts < h.ts[-1]:
            stale = self.drop(r)  # out of order within the run: not a live stream either
            h = None
        if self.held_total >= self.max_held:
            return [], stale + 1
        if h is None:
            h = r.held = Held(mono)
        h.items.append(item)
        h.ts.append(ts)
        self.held_total += 1
        span = mono - h.since
        if len(h.ts) >= 2 and span >= self.step_after_s and ts - h.ts[0] >= span / 2:
            out = list(zip(h.items, h.ts, strict=True))
            self.held_total -= len(out)
            r.held = None
            r.newest = ts if ts < now else now
            self.n_steps += 1
            return out, stale
        return [], stale
