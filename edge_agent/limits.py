"""Engineering limits: HiHi / Hi / Lo / LoLo setpoints from the datasheet, checked beside the
learned model on every reading. No I/O; used by ``Pipeline.process``.

As in ISA-18.2, **each limit is its own alarm** (its own alert id, raise and clear, ack and
shelve state): a pressure that climbs past Hi and then HiHi has two alarms active, Hi and
HiHi; falling back, HiHi clears first. A reading that jumps straight past HiHi raises Hi and
HiHi together. The learned model's alarm is a third, independent condition of the series
(``source: "model"``): a series can be in model alarm and limit alarm at once, and neither
hides the other.

- A high limit is reached at ``value >= setpoint``, a low one at ``value <= setpoint``.
- It clears once the value is back inside by the limits' ``deadband`` (value units):
  ``value < setpoint - deadband`` (high), ``value > setpoint + deadband`` (low).
- ``on_delay`` (the series' setting): the value must be beyond a setpoint for that many
  consecutive readings before the alarm is raised.
- Limits are checked while the model is still learning: they come from the datasheet, not
  from data. A disabled series is not checked.

Per reading the pipeline compares the value with two edges (``lo_edge < value < hi_edge``:
nothing can change); only a reading outside them calls ``LimitState.update``.

>>> from edge_agent.rules import Limits
>>> state = LimitState(LimitSpec.of(Limits(hihi=9.5, hi=8.0, lo=1.0, deadband=0.2)))
>>> [state.update(v, 1) for v in (5.0, 8.1, 9.6, 9.4, 9.2, 7.9, 7.7)]
[[], [('hi', 'raised', 8.0)], [('hihi', 'raised', 9.5)], [], [('hihi', 'cleared', 9.5)], [], [('hi', 'cleared', 8.0)]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_agent.rules import Limits

HIHI, HI, LO, LOLO = "hihi", "hi", "lo", "lolo"
NAMES = (HIHI, HI, LO, LOLO)
_INF = math.inf


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """The setpoints of one ``limits`` rule, ordered for checking; shared by its series."""

    highs: tuple[tuple[str, float], ...]  # ascending: (hi, 8.0), (hihi, 9.5)
    lows: tuple[tuple[str, float], ...]  # descending: (lo, 1.0), (lolo, 0.5)
    deadband: float

    @classmethod
    def of(cls, limits: Limits) -> LimitSpec:
        highs = tuple((n, float(v)) for n, v in ((HI, limits.hi), (HIHI, limits.hihi)) if v is not None)
        lows = tuple((n, float(v)) for n, v in ((LO, limits.lo), (LOLO, limits.lolo)) if v is not None)
        return cls(highs, lows, float(limits.deadband))

    def setpoint(self, name: str) -> float:
        return dict(self.highs + self.lows)[name]

    def expected(self) -> tuple[float | None, float | None]:
        """The range inside every limit (None for an open side): what an operator expects."""
        return (self.lows[0][1] if self.lows else None, self.highs[0][1] if self.highs else None)


class LimitState:
    """Which limits of one series are active; the edges between which nothing can change."""

    __slots__ = ("spec", "high", "low", "lo_edge", "hi_edge", "pending", "raised")

    def __init__(self, spec: LimitSpec) -> None:
        self.spec = spec
        # limit -> (seq, reading ts, alert_id) of its raised alarm: what its clear refers to
        self.raised: dict[str, tuple[int, float, str]] = {}
        self.high = 0  # active high limits, counted from the lowest (1: hi, 2: hi and hihi)
        self.low = 0  # active low limits, counted from the highest
        self.pending = 0  # consecutive readings beyond the next setpoint, while on_delay runs
        self.lo_edge = -_INF
        self.hi_edge = _INF
        self._edges()

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.spec.highs[:self.high]) + tuple(n for n, _ in self.spec.lows[:self.low])

    def _edges(self) -> None:
        spec = self.spec
        if self.pending:  # an on-delay is counting: every reading counts (or resets) it
            self.lo_edge, self.hi_edge = _INF, -_INF
            return
        hi = spec.highs[self.high][1] if self.high < len(spec.highs) else _INF
        lo = spec.lows[self.low][1] if self.low < len(spec.lows) else -_INF
        if self.high:
            lo = max(lo, spec.highs[self.high - 1][1] - spec.deadband)
        if self.low:
            hi = min(hi, spec.lows[self.low - 1][1] + spec.deadband)
        self.lo_edge, self.hi_edge = lo, hi

    def update(self, value: float, on_delay: int) -> list[tuple[str, str, float]]:
        """The changes one reading makes: ``(limit, "raised" | "cleared", setpoint)``, in order."""
        spec, out = self.spec, []
        db = spec.deadband
        while self.high and value < spec.highs[self.high - 1][1] - db:
            self.high -= 1
            out.append((spec.highs[self.high][0], "cleared", spec.highs[self.high][1]))
        while self.low and value > spec.lows[self.low - 1][1] + db:
            self.low -= 1
            out.append((spec.lows[self.low][0], "cleared", spec.lows[self.low][1]))
        beyond = ((self.high < len(spec.highs) and value >= spec.highs[self.high][1])
                  or (self.low < len(spec.lows) and value <= spec.lows[self.low][1]))
        if beyond:
            self.pending += 1
            if self.pending >= on_delay:
                self.pending = 0
                while self.high < len(spec.highs) and value >= spec.highs[self.high][1]:
                    out.append((spec.highs[self.high][0], "raised", spec.highs[self.high][1]))
                    self.high += 1
                while self.low < len(spec.lows) and value <= spec.lows[self.low][1]:
                    out.append((spec.lows[self.low][0], "raised", spec.lows[self.low][1]))
                    self.low += 1
        else:
            self.pending = 0
        self._edges()
        return out

    def restore(self, name: str) -> None:
        """An alarm of this limit was active before a restart: it stays active."""
        for i, (n, _) in enumerate(self.spec.highs):
            if n == name:
                self.high = max(self.high, i + 1)
        for i, (n, _) in enumerate(self.spec.lows):
            if n == name:
                self.low = max(self.low, i + 1)
        self._edges()

    def end(self) -> list[tuple[str, str, float]]:
        """Every active limit, as cleared (the series is disabled or its limits removed)."""
        out = [(n, "cleared", v) for n, v in reversed(self.spec.highs[:self.high])]
        out += [(n, "cleared", v) for n, v in reversed(self.spec.lows[:self.low])]
        self.high = self.low = self.pending = 0
        self._edges()
        return out
