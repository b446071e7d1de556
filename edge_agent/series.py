"""Per-series state: a bounded ring of recent readings, the active model and the alarm state."""

from __future__ import annotations

import time
from array import array
from collections import deque
from dataclasses import dataclass

import numpy as np

from edge_agent.model_store import Model

# Timestamps in the ring are float32 offsets from this process-wide base: half the memory of
# float64, and still ~0.25 s resolution a month after start (plots and training need no more;
# alarms carry the reading's own full-precision timestamp).
TIME_BASE = time.time()


@dataclass(slots=True)
class AlarmMark:
    ts: float
    value: float
    state: str


class Series:
    __slots__ = (
        "id", "values", "times", "v", "t", "size", "pos", "count", "model", "active", "normal_run", "raised_id",
        "raised_ts", "last_value", "last_ts", "n_readings", "n_scored", "n_anomalous",
        "n_alarms", "since_fit", "fit_pending", "marks", "last_score", "drift_base",
        "drift_sum", "drift_n", "last_alarm_ts", "changes", "next_fit_at",
    )

    def __init__(self, series_id: str, buffer_size: int) -> None:
        self.id = series_id
        # array.array takes a scalar write in ~30 ns, a numpy array in ~100 ns: this is the
        # per-reading path. ``v``/``t`` are numpy views of the same memory for bulk work.
        self.values = array("d", bytes(8 * buffer_size))
        self.times = array("f", bytes(4 * buffer_size))
        self.v = np.frombuffer(self.values, dtype=np.float64)
        self.t = np.frombuffer(self.times, dtype=np.float32)
        self.size = buffer_size
        self.pos = 0  # next write index
        self.count = 0  # readings held (<= buffer size)
        self.model: Model | None = None
        self.active = False  # alarm raised and not yet cleared
        self.normal_run = 0
        self.raised_id: str | None = None
        self.raised_ts: float | None = None
        self.last_value = float("nan")
        self.last_ts = float("nan")
        self.last_score = float("nan")
        self.n_readings = 0
        self.n_scored = 0
        self.n_anomalous = 0
        self.n_alarms = 0
        self.since_fit = 0
        self.fit_pending = False
        self.marks: deque[AlarmMark] = deque(maxlen=64)
        self.drift_base: float | None = None
        self.drift_sum = 0.0
        self.drift_n = 0
        self.last_alarm_ts: float | None = None
        # Bumped on every change a plot would show; lets renderers cache per (series, changes).
        self.changes = 0
        # After a failed fit, the reading count at which to try again (no retry storm).
        self.next_fit_at = 0

    def append(self, value: float, ts: float) -> None:
        pos = self.pos
        self.values[pos] = value
        self.times[pos] = ts - TIME_BASE
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
        n = values.shape[0]
        v, t = self.v, self.t
        if n >= size:
            values, ts = values[-size:], ts[-size:]
            v[:] = values
            t[:] = ts - TIME_BASE
            self.pos = 0
            self.count = size
        else:
            end = self.pos + n
            if end <= size:
                v[self.pos:end] = values
                t[self.pos:end] = ts - TIME_BASE
            else:
                first = size - self.pos
                v[self.pos:] = values[:first]
                t[self.pos:] = ts[:first] - TIME_BASE
                v[: n - first] = values[first:]
                t[: n - first] = ts[first:] - TIME_BASE
            self.pos = end % size
            self.count = min(size, self.count + n)
        self.n_readings += int(n)
        self.last_value = float(values[-1])
        self.last_ts = float(ts[-1])
        self.changes += 1

    def recent(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The last ``n`` readings (all held if None), oldest first, as (epoch seconds, values)."""
        count = self.count if n is None else max(0, min(n, self.count))
        idx = (np.arange(self.pos - count, self.pos) % self.size) if count else np.arange(0)
        return self.t[idx].astype(np.float64) + TIME_BASE, self.v[idx]

    @property
    def state(self) -> str:
        if self.model is None:
            return "learning"
        return "alarm" if self.active else "normal"
