"""Row assembly: one machine's readings, arriving one sensor at a time, into rows.

The rule (``docs/machines.md``), per machine:

* the machine holds the **latest value of each sensor** and when it was read;
* a **row opens** with the first reading after the previous row closed, and **closes**
  when every sensor of the machine has reported since it opened (the common case: a PLC's
  cycle, on separate topics at slightly different times or in one message); or, before
  that, when a reading comes that belongs to the next cycle: a sensor reporting a second
  time, or any reading more than ``max_skew_s`` after the one that opened the row. The row
  closes first and that reading opens the next one. The time rule is what keeps rows in
  step: without it, rows that began one sensor out of phase (a machine first heard from
  mid-cycle) would pair each sensor with its neighbour's previous reading for ever;
* a closed row's timestamp is the newest reading in it; it holds each sensor's latest value
  if that value is at most ``stale_after_s`` older than the row (a slower sensor's last value
  is carried, **sample and hold**), and no value otherwise: the sensor is **stale** and the
  row **incomplete**.

Rows close on readings only, never on a timer: the assembler needs no clock of its own, and
a machine that falls silent simply has nothing to score (its per-series detectors and the
missing readings say so). Readings with the same timestamp as the row's others are common
(one PLC cycle); older ones are placed like any other (the per-series stale rule has already
refused replays before a reading gets here).
"""

from __future__ import annotations

import math
from collections.abc import Callable

_NAN = math.nan

# emit(values in sensor order with NaN for stale sensors, row timestamp, complete?)
Emit = Callable[[list[float], float, bool], None]


class RowAssembler:
    __slots__ = ("sensors", "index", "latest", "times", "fresh", "n_fresh", "opened", "stale_after", "max_skew", "emit")

    def __init__(self, stale_after_s: float, emit: Emit, max_skew_s: float = 0.5) -> None:
        self.sensors: list[str] = []
        self.index: dict[str, int] = {}
        self.latest: list[float] = []
        self.times: list[float] = []
        self.fresh: list[bool] = []
        self.n_fresh = 0
        self.opened = -math.inf  # timestamp of the reading that opened the row
        self.stale_after = stale_after_s
        self.max_skew = max_skew_s
        self.emit = emit

    def add_sensor(self, name: str) -> int:
        j = len(self.sensors)
        self.sensors.append(name)
        self.index[name] = j
        self.latest.append(_NAN)
        self.times.append(-math.inf)
        self.fresh.append(False)
        return j

    def offer(self, j: int, value: float, ts: float) -> None:
        """A reading of sensor ``j``; emits zero, one or two rows."""
        fresh = self.fresh
        if self.n_fresh and (fresh[j] or ts - self.opened > self.max_skew):
            self.close()
        if not self.n_fresh:
            self.opened = ts
        self.latest[j] = value
        self.times[j] = ts
        fresh[j] = True
        self.n_fresh += 1
        if self.n_fresh == len(fresh):
            self.close()

    def close(self) -> None:
        if not self.n_fresh:
            return
        times, fresh = self.times, self.fresh
        row_ts = max(t for t, f in zip(times, fresh, strict=True) if f)
        oldest = row_ts - self.stale_after
        values = list(self.latest)
        complete = True
        for j, t in enumerate(times):
            if t < oldest:
                values[j] = _NAN
                complete = False
            fresh[j] = False
        self.n_fresh = 0
        self.emit(values, row_ts, complete)

    def stale_sensors(self, now_ts: float) -> list[str]:
        """Sensors whose latest value is older than ``stale_after_s`` at ``now_ts``."""
        return [s for s, t in zip(self.sensors, self.times, strict=True) if t < now_ts - self.stale_after]
