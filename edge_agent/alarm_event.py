"""An alarm edge as the pipeline emits it (``AlarmEvent``) and the id it is sent under.

Made by the alarm decision (``alarm_decision.py``), turned into a payload by
``alarm_payload.py``, announced by ``annunciator.py`` and Sparkplug. Kept apart from the
pipeline so those consumers depend on the event, not on the code that scores readings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(slots=True)
class AlarmEvent:
    alert_id: str
    series: str
    state: str  # "raised" | "cleared" | "accepted" (held so long it was taken as the new normal)
    ts: float
    value: float
    score: float
    threshold: float
    detector: str
    version: int
    raised_alert_id: str | None = None  # cleared / accepted: the alarm this one ends
    # raised: why (the detector's explanation, when it gives one)
    kind: str | None = None  # detectors.base: spike, level_shift, drift, variance, stuck, out_of_range, shape
    direction: str | None = None  # "up" | "down" | None
    expected_low: float | None = None  # the range expected at that moment
    expected_high: float | None = None
    message: str = ""  # one line an operator reads without a plot
    held_s: float | None = None  # cleared / accepted: reading time since the raise
    peak_score: float | None = None  # cleared / accepted: highest score / threshold while raised
    seq: int = 0  # the series' alarm sequence number: 1 for its first alarm, then 2, ...
    # Which condition (limits.py): the learned model ("model"), or an engineering limit
    # ("limit", with ``limit`` hihi / hi / lo / lolo and its ``setpoint``). Each is its own alarm.
    source: str = "model"
    limit: str | None = None
    setpoint: float | None = None
    priority: int = 2  # priority.py: 1 low, 2 medium, 3 high, 4 critical
    unit: str | None = None

    @property
    def condition(self) -> str:
        """The alarm condition of its series this event belongs to: "model", or the limit."""
        return self.limit or "model"


def alert_id(gateway_id: str, series: str, state: str, seq: int, raised_ts: float) -> str:
    """One id per alarm edge, the same whenever that edge is sent again.

    ``seq`` numbers a series' alarms (persisted in the outbox's ``alarm_seq`` table, so a
    restart does not reuse it) and ``raised_ts`` is the timestamp of the reading that raised
    the alarm; a raise and its clear share both. An id hashed from the reading timestamp alone
    gave two alarms within one device timestamp (coarse clocks, a json_batch stamped with its
    receive time) one id, and a SCADA deduplicating on it dropped the second alarm and its
    clear. With the timestamp in as well, a sequence number lost with a degraded outbox still
    cannot collide with an earlier alarm's id unless it was raised by the very same reading.
    """
    raw = f"{gateway_id}\x1f{series}\x1f{state}\x1f{seq}\x1f{raised_ts!r}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(raw, digest_size=12).hexdigest()
