"""A machine alarm's identity and the event ``MachineSet`` hands to its ``on_alarm`` callback.

A machine shares the outbox's tables (``alarm_state``, ``alarm_seq``) and the alarm-id hash
with the series, under a key no series id can be (``machine_key``); ``MachineAlarmEvent``
is one alarm edge (raised, cleared, accepted) with the sensors that explain it, and
``payload()`` the JSON a subscriber gets (README "Alarms out", ``docs/machines.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edge_agent.machine_detectors import Contribution
from edge_agent.pipeline import alert_id

# Where a machine's alarms are kept beside the series' (the outbox's alarm_state and
# alarm_seq tables) and what its alarm ids hash: a NUL can never be in a series id (ingest
# and Sparkplug refuse it), so no series can take a machine's place, whatever it is called.
_KEY_PREFIX = "machine\x00"


def machine_key(machine_id: str) -> str:
    """A machine's key in the tables it shares with series (and in its alarm ids)."""
    return _KEY_PREFIX + machine_id


def machine_of_key(key: str) -> str | None:
    """The machine id of a ``machine_key``, None for a series id."""
    return key[len(_KEY_PREFIX):] if key.startswith(_KEY_PREFIX) else None


def machine_alert_id(gateway_id: str, machine_id: str, state: str, seq: int, raised_ts: float) -> str:
    """One id per machine alarm edge, the same whenever that edge is sent again: as a series'
    (``pipeline.alert_id``: the machine's alarm number and the raising row's timestamp; a
    raise and its clear share both), and never equal to one (``machine_key``)."""
    return alert_id(gateway_id, machine_key(machine_id), state, seq, raised_ts)


@dataclass(slots=True)
class MachineAlarmEvent:
    alert_id: str
    machine: str
    state: str  # "raised" | "cleared" | "accepted" (held so long it was taken as the new normal)
    ts: float  # the row's timestamp (its newest reading)
    score: float
    threshold: float
    detector: str
    version: int
    sensors: list[Contribution]  # every sensor of the machine, ranked by contribution
    raised_alert_id: str | None = None  # cleared / accepted: the alarm this one ends
    seq: int = 0  # the machine's alarm number: 1 for its first alarm, then 2, ...
    message: str = ""  # one line an operator reads: "current high, flow low: ..."
    held_s: float | None = None  # cleared / accepted: row time since the raise
    peak_score: float | None = None  # cleared / accepted: highest score / threshold while raised

    def payload(self, gateway_id: str) -> dict[str, Any]:
        """The JSON document a subscriber gets (README "Alarms out"). Every number is finite
        or null, so ``json.dumps(..., allow_nan=False)`` cannot fail."""
        doc: dict[str, Any] = {
            "alert_id": self.alert_id, "gateway_id": gateway_id, "machine": self.machine, "state": self.state,
            "ts": self.ts, "score": _finite(self.score), "threshold": _finite(self.threshold),
            "model": {"detector": self.detector, "version": self.version},
            "sensors": [{k: _finite(v) if isinstance(v, float) else v for k, v in c.as_dict().items()} for c in self.sensors],
            "message": self.message, "seq": self.seq,
        }
        if self.raised_alert_id is not None:
            doc["raised_alert_id"] = self.raised_alert_id
        if self.held_s is not None:
            doc["held_s"] = round(self.held_s, 3)
            doc["peak_score"] = _finite(self.peak_score)
        return doc


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
