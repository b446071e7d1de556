"""One machine: its row assembler, alarm state, model, counters and the complete rows it holds.

The rows held are a ring of ``machines.buffer_rows``: what the first fit (and a refit)
trains on, with each row's score (NaN while learning) for the machine plot. ``MachineSet``
(``machine_set.py``) owns the machines and does everything to them; this is their state.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge_agent.alarm_state import AlarmState
from edge_agent.machines.rows import RowAssembler
from edge_agent.model_store import Model
from edge_agent.series import AlarmMark


@dataclass(eq=False)
class Machine:
    id: str
    rows: RowAssembler
    alarm: AlarmState
    buffer_rows: int
    model: Model | None = None
    raised_id: str | None = None
    alarm_seq: int = 0  # the number of its last alarm (alarm ids go on from it after a restart)
    n_alarms: int = 0  # raised by this run
    last_score: float = math.nan
    last_row_ts: float = -math.inf
    fit_pending: bool = False
    next_fit_at: int = 0
    n_rows: int = 0  # rows closed
    n_incomplete: int = 0  # of which not scored: a sensor was stale
    n_scored: int = 0
    n_ignored: int = 0  # readings of sensors the model does not know, or beyond max_sensors
    ignored_sensors: set[str] = field(default_factory=set)
    changes: int = 0
    marks: deque[AlarmMark] = field(default_factory=lambda: deque(maxlen=64))  # recent alarm edges (plots)
    # Complete rows, a ring: what the first fit (and a refit) trains on; and each one's score
    # (NaN while learning), for a plot of the score beside the sensors.
    _buf: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    _buf_ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _buf_score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _pos: int = 0
    _count: int = 0

    @property
    def sensors(self) -> list[str]:
        return self.rows.sensors

    @property
    def state(self) -> str:
        if self.model is None:
            return "learning"
        return "alarm" if self.alarm.active else "normal"

    def keep(self, values: list[float], ts: float) -> None:
        p = len(values)
        if self._buf.shape[1] != p:
            self._buf = np.empty((self.buffer_rows, p))
            self._buf_ts = np.empty(self.buffer_rows)
            self._buf_score = np.empty(self.buffer_rows)
            self._pos = self._count = 0
        self._buf[self._pos] = values
        self._buf_ts[self._pos] = ts
        self._buf_score[self._pos] = math.nan
        self._pos = (self._pos + 1) % self.buffer_rows
        self._count = min(self._count + 1, self.buffer_rows)

    def forget_rows(self) -> None:
        self._pos = self._count = 0

    def scored(self, score: float) -> None:
        """The score of the row kept last."""
        self._buf_score[self._pos - 1] = score

    def recent_rows(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The last ``n`` complete rows held (all if None), oldest first: (rows, timestamps)."""
        idx = self._recent(n)
        return self._buf[idx], self._buf_ts[idx]

    def recent_scores(self, n: int | None = None) -> np.ndarray:
        """The scores of ``recent_rows(n)`` (NaN: not scored, the machine was learning)."""
        return self._buf_score[self._recent(n)]

    def _recent(self, n: int | None) -> np.ndarray:
        count = self._count if n is None else max(0, min(n, self._count))
        return np.arange(self._pos - count, self._pos) % max(1, self.buffer_rows)

    @property
    def rows_held(self) -> int:
        return self._count
