"""Raise once, hold while the score stays up, clear with hysteresis: the alarm decision alone.

The same semantics as the per-series default (``pipeline.py``): an alarm is raised once,
when a score reaches the threshold; it is held while the scores stay up; it is cleared after
``clear_after`` consecutive normal scores. One difference, hysteresis: a score counts as
normal only below ``clear_ratio x threshold``, so a score hovering at the threshold neither
clears nor re-raises the alarm every few rows; a score between the two resets the count.

No I/O and no knowledge of what is scored: a score, a threshold, a timestamp and an
explanation (called only on a transition, so building it costs nothing per row) go in;
a ``Transition`` comes out when the state changes. Written so that it can be swapped for
the shared per-series decision module (``edge_agent/alarm_state.py``, issue 13) once that
exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Transition:
    state: str  # "raised" | "cleared"
    ts: float
    score: float
    threshold: float
    explanation: Any
    raised_ts: float | None  # for "cleared": when the alarm it clears was raised


class AlarmState:
    """One alarm's state machine.

    >>> a = AlarmState(clear_after=2, clear_ratio=0.8)
    >>> [t and t.state for t in (a.update(s, 1.0, float(i), lambda: None) for i, s in enumerate([0.5, 1.2, 2.0, 0.9, 0.7, 0.85, 0.5, 0.4, 1.1]))]
    [None, 'raised', None, None, None, None, None, 'cleared', 'raised']
    """

    __slots__ = ("clear_after", "clear_ratio", "active", "normal_run", "raised_ts", "n_raised", "n_cleared")

    def __init__(self, clear_after: int = 10, clear_ratio: float = 0.8) -> None:
        if clear_after < 1 or not 0.0 < clear_ratio <= 1.0:
            raise ValueError("clear_after must be >= 1 and clear_ratio in (0, 1]")
        self.clear_after = clear_after
        self.clear_ratio = clear_ratio
        self.active = False
        self.normal_run = 0
        self.raised_ts: float | None = None
        self.n_raised = 0
        self.n_cleared = 0

    def update(self, score: float, threshold: float, ts: float, explain: Callable[[], Any]) -> Transition | None:
        if score >= threshold:
            self.normal_run = 0
            if self.active:
                return None
            self.active = True
            self.raised_ts = ts
            self.n_raised += 1
            return Transition("raised", ts, score, threshold, explain(), None)
        if not self.active:
            return None
        if score < self.clear_ratio * threshold:
            self.normal_run += 1
            if self.normal_run >= self.clear_after:
                self.active = False
                self.normal_run = 0
                self.n_cleared += 1
                return Transition("cleared", ts, score, threshold, explain(), self.raised_ts)
        else:
            self.normal_run = 0
        return None
