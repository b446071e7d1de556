"""Per-series state: a bounded ring of recent readings, the active model and the alarm state.

The ring grows as readings arrive: 16 readings at the first, doubling up to
``series.buffer_size``. A series on a junk topic that sends one reading then costs a few
hundred bytes instead of the whole ring (34 kB at the default 4096 readings): before, 100,000
one-reading junk series took the agent from 70 MB to 3.5 GB. Until the ring is full the
readings sit at positions 0..count-1 (the ring has not wrapped yet), so growing is a copy of
the held readings into a larger array, log2(buffer_size / 16) times in a series' life.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.alarm_state import AlarmState
from edge_agent.limits import LimitSpec, LimitState
from edge_agent.model_store import Model

if TYPE_CHECKING:
    from edge_agent.checkpoints import Checkpoint
    from edge_agent.series_settings import Settings


class SeriesBytes:
    """The running total of what the pipeline's series cost (``Series.nbytes`` summed)."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0

# The ring keeps every value (float64: training needs full precision) but one exact timestamp
# per block of BLOCK readings; plots interpolate within a block. That is 34 kB per series at
# the default 4096 readings instead of 48 kB with a timestamp per reading: the difference
# between fitting 1,000 series in the memory budget or not.
BLOCK = 16
_SHIFT = 4
_EMPTY = array("d")
_FIRST = BLOCK  # readings held after the first growth step
# Bytes a series costs besides its ring arrays, measured with tracemalloc over 10,000
# one-reading series (tests/test_series.py keeps it honest): the object and its float
# fields, its alarm state, the id string, its slots in the pipeline's dict and eviction queue,
# and the route cached for its topic.
OVERHEAD_BYTES = 840


@dataclass(slots=True)
class AlarmMark:
    ts: float
    value: float
    state: str


class Series:
    __slots__ = (
        "id", "values", "bts", "size", "pos", "count", "model", "alarm", "raised_id",
        "last_value", "last_ts", "n_readings", "n_scored", "n_anomalous",
        "n_alarms", "since_fit", "fit_pending", "last_score", "drift_base",
        "drift_sum", "drift_n", "last_alarm_ts", "changes", "next_fit_at", "stale", "_marks", "seen", "seen_n",
        "topic", "alarm_seq", "budget", "settings", "limits", "onset", "raised_seq", "checkpoints",
        "follow",
    )

    def __init__(self, series_id: str, buffer_size: int, budget: SeriesBytes | None = None, settings: Settings | None = None) -> None:
        self.id = series_id
        # array.array takes a scalar write in ~30 ns, a numpy array in ~100 ns: this is the
        # per-reading path. The rings grow as readings arrive (see _grow), so a series known
        # only from its stored model costs no ring at all, and a one-reading series a small one.
        self.values = _EMPTY
        self.bts = _EMPTY
        self.size = (buffer_size + BLOCK - 1) // BLOCK * BLOCK
        self.pos = 0  # next write index
        self.count = 0  # readings held (<= buffer size)
        self.model: Model | None = None
        self.alarm = AlarmState()  # raise / hold / clear / accept (alarm_state.py)
        self.raised_id: str | None = None
        self.last_value = float("nan")
        self.last_ts = float("nan")
        self.last_score = float("nan")
        self.n_readings = 0
        self.n_scored = 0
        self.n_anomalous = 0
        self.n_alarms = 0
        self.since_fit = 0
        self.fit_pending = False
        self._marks: deque[AlarmMark] | None = None  # made on first use: an empty deque is 760 bytes
        self.drift_base: float | None = None
        self.drift_sum = 0.0
        self.drift_n = 0
        self.last_alarm_ts: float | None = None
        # Bumped on every change a plot would show; lets renderers cache per (series, changes).
        self.changes = 0
        # After a failed fit, the reading count at which to try again (no retry storm).
        self.next_fit_at = 0
        # The source said it stopped reporting (a Sparkplug NDEATH/DDEATH): readings are not
        # expected until it is born again. Set and cleared by edge_agent/sparkplug/ingest.py.
        self.stale = False
        # Pipeline.clock when a sweep last saw n_readings move (seen_n): what eviction ranks by.
        self.seen = 0.0
        self.seen_n = 0
        # The first topic that fed the series (ingest's business: a second one is reported).
        self.topic: str | None = None
        # Sequence number of the series' current (or last) alarm: part of its alert_id.
        self.alarm_seq = 0
        # The settings its rules gave it (series_settings.py), resolved once at creation; shared.
        self.settings: Settings = settings if settings is not None else _default_settings()
        # Engineering limits' state (limits.py), when its settings have limits and it is enabled.
        lim = self.settings.limits
        self.limits: LimitState | None = LimitState(LimitSpec.of(lim)) if lim is not None and self.settings.enabled else None
        # On-delay of the learned-model alarm: [first, last] scored-reading index of the current
        # run of readings at or above the threshold (None: no run).
        self.onset: list[int] | None = None
        # Sequence number of the learned-model alarm raised now (limit alarms take numbers too).
        self.raised_seq = 0
        # A move an operator accepted, followed while it goes on (alarm_follow.py): (direction,
        # reading until which a raise that way is the move, last reading it may be, who accepted).
        self.follow: tuple[str, int, int, str] | None = None
        # Copies of a streaming detector's state taken as it scores (checkpoints.py): the plot
        # replays the held readings from them to draw the band the detector used at each reading.
        self.checkpoints: list[Checkpoint] | None = None
        # Where the ring's bytes are accounted (the pipeline's memory budget), if anywhere.
        self.budget = budget
        if budget is not None:
            budget.bytes += OVERHEAD_BYTES

    @property
    def marks(self) -> deque[AlarmMark]:
        """Recent alarm edges, for plots (at most 64)."""
        if self._marks is None:
            self._marks = deque(maxlen=64)
        return self._marks

    @property
    def nbytes(self) -> int:
        """What this series costs in memory, as the budget counts it."""
        cps = self.checkpoints
        return OVERHEAD_BYTES + 8 * (len(self.values) + len(self.bts)) + (sum(c.nbytes for c in cps) if cps else 0)

    def _grow(self, need: int) -> None:
        """Make room for at least ``need`` readings (at most the ring size): double, from 16.

        Only ever called before the ring wraps, when the readings held are positions 0..pos-1.
        Concatenation makes arrays of the exact size (array.extend would over-allocate).
        """
        old = len(self.values)
        cap = max(_FIRST, old)
        while cap < need:
            cap *= 2
        cap = min(cap, self.size)
        if cap <= old:
            return
        old_blocks, blocks = len(self.bts), cap >> _SHIFT
        self.values = self.values + array("d", bytes(8 * (cap - old)))
        self.bts = self.bts + array("d", bytes(8 * (blocks - old_blocks)))
        if self.budget is not None:
            self.budget.bytes += 8 * (cap - old + blocks - old_blocks)

    def release(self) -> int:
        """Give the ring back (the series is being evicted); returns the bytes freed."""
        freed = self.nbytes
        self.values = self.bts = _EMPTY
        self.checkpoints = None
        if self.budget is not None:
            self.budget.bytes -= freed
            self.budget = None
        return freed

    def append(self, value: float, ts: float) -> None:
        pos = self.pos
        try:
            self.values[pos] = value
        except IndexError:  # the ring is not that large yet: grow it (a few times per series)
            self._grow(pos + 1)
            self.values[pos] = value
        if not pos & (BLOCK - 1):
            self.bts[pos >> _SHIFT] = ts
        pos += 1
        self.pos = 0 if pos == self.size else pos
        if self.count < self.size:
            self.count += 1
        self.n_readings += 1
        self.last_value = value
        self.last_ts = ts
        self.changes += 1

    def append_many(self, values: np.ndarray, ts: np.ndarray) -> None:
        size = self.size
        total = n = values.shape[0]
        if len(self.values) < size:
            self._grow(self.pos + total)
        if n > size:
            values, ts = values[-size:], ts[-size:]
            n = size
        v = np.frombuffer(self.values, dtype=np.float64)
        b = np.frombuffer(self.bts, dtype=np.float64)
        # Readings cut off above still advance the ring, so that it ends exactly where
        # appending them one by one would leave it (same blocks, same timestamps).
        start = (self.pos + total - n) % size
        positions = (start + np.arange(n)) % size
        v[positions] = values
        starts = (positions & (BLOCK - 1)) == 0
        b[positions[starts] >> _SHIFT] = ts[starts]
        self.pos = int((start + n) % size)
        self.count = min(size, self.count + n)
        self.n_readings += int(total)
        self.last_value = float(values[-1])
        self.last_ts = float(ts[-1])
        self.changes += 1

    def _held(self, n: int | None) -> np.ndarray:
        """Ring positions of the last ``n`` readings held (all if None), oldest first."""
        count = self.count if n is None else max(0, min(n, self.count))
        return np.arange(self.pos - count, self.pos) % self.size

    def recent_values(self, n: int | None = None) -> np.ndarray:
        """The last ``n`` values (all held if None), oldest first: what a fit trains on,
        without the timestamp interpolation of ``recent`` (a quarter of its cost)."""
        return np.frombuffer(self.values, dtype=np.float64)[self._held(n)]

    def recent(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The last ``n`` readings (all held if None), oldest first, as (epoch seconds, values).

        Values are exact. Timestamps are exact at the first reading of each block of 16 and
        at the newest reading, and interpolated in between.
        """
        idx = self._held(n)
        if idx.size == 0:
            return np.zeros(0), np.zeros(0)
        size = self.size
        values = np.frombuffer(self.values, dtype=np.float64)[idx]
        # Anchors: block starts among the held readings (in sequence order), plus the newest.
        held_from = (self.pos - self.count) % size
        seq_of_idx = (idx - held_from) % size
        starts = (idx & (BLOCK - 1)) == 0
        anchor_x = seq_of_idx[starts].astype(np.float64)
        anchor_t = np.frombuffer(self.bts, dtype=np.float64)[idx[starts] >> _SHIFT]
        last_x = float(self.count - 1)
        if anchor_x.size == 0 or anchor_x[-1] != last_x:
            anchor_x = np.append(anchor_x, last_x)
            anchor_t = np.append(anchor_t, self.last_ts)
        times = np.interp(seq_of_idx.astype(np.float64), anchor_x, anchor_t)
        return times, values

    @property
    def active(self) -> bool:
        """An alarm is raised and not yet cleared: the learned model's or an engineering limit's."""
        lim = self.limits
        return self.alarm.active or (lim is not None and bool(lim.high or lim.low))

    @property
    def raised_ts(self) -> float | None:
        return self.alarm.raised_ts

    @property
    def state(self) -> str:
        # An open alarm stays visible while its source is away; it clears on normal readings.
        if self.active:
            return "alarm"
        if not self.settings.enabled:
            return "disabled"
        if self.stale:
            return "stale"
        return "learning" if self.model is None else "normal"


_DEFAULT: list[Settings] = []


def _default_settings() -> Settings:
    """Settings of a series made without any (tests, tools): the built-in defaults."""
    if not _DEFAULT:
        from edge_agent.config import AgentConfig
        from edge_agent.series_settings import SettingsSource

        _DEFAULT.append(SettingsSource(AgentConfig()).default)
    return _DEFAULT[0]
