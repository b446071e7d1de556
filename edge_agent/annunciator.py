"""What operators live with: each alarm's state, acknowledgement and shelving, and the alarm rate.

Between the pipeline (which decides that an alarm is raised or ends) and the outbox (which
delivers). The states are ISA-18.2's, per alarm *condition* of a series (the learned model's,
and each engineering limit's: ``limits.py``):

==================  ============================================================================
state               meaning
==================  ============================================================================
active_unacked      raised, nobody has acknowledged it yet
active_acked        raised and acknowledged: the operator knows; it stays until it clears
cleared_unacked     it ended (cleared or accepted) before anyone acknowledged it: it stays in the
                    list until acknowledged (a fault that came and went is still news)
(normal)            ended and acknowledged: the condition is forgotten
==================  ============================================================================

A series can also be **shelved** (an operator's decision, with a reason and a duration, e.g.
for maintenance) or **disabled** by its rules (``enabled: false``, ISA's "suppressed by design":
not scored at all). A shelved series is still scored and its alarm state still runs:

- a raise while shelved is **not published** on the alarm topic; it is counted (``suppressed``)
  and shown on the page and the state topic as active and shelved;
- the end of an alarm SCADA already has is published as always, so SCADA never keeps a stale
  alarm; the end of one raised under the shelve is not (SCADA never saw it);
- when the shelve ends (``unshelve``, or its time is up) each alarm raised under it that is
  **still active is published then**, as ``raised`` with its original ``alert_id``, reading and
  timestamp and ``after_shelve: true``: the condition is still there and SCADA must know.

The retained state topic (``alarms.state_topic``) carries, per series, the whole picture:
settings, shelve, and every condition with its state (``state_doc``); it is published on every
change. What operators did is committed to the outbox's SQLite file (``alarm_condition``,
``alarm_shelve``) in the same transaction as the message announcing it, so a restart comes back
acknowledged and shelved as it left.

Alarm rate (EEMUA 191): alarms published in the last 10 minutes, to the minute. About one per
10 minutes per operator is manageable; more than ``alarms.flood_per_10min`` (default 10) is a
flood, shown on the status page and in ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edge_agent.alarm_payload import alarm_doc, strict_json
from edge_agent.priority import Priority
from edge_agent.topics import render

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.outbox import Record
    from edge_agent.pipeline import AlarmEvent
    from edge_agent.series import Series

log = logging.getLogger(__name__)

ACTIVE_UNACKED, ACTIVE_ACKED, CLEARED_UNACKED = "active_unacked", "active_acked", "cleared_unacked"
STATES = (ACTIVE_UNACKED, ACTIVE_ACKED, CLEARED_UNACKED)
MAX_DOC = 65536  # a stored record longer than this is not loaded (it cannot be one of ours)


class Sink(Protocol):
    """Where the annunciator's messages and records go (the agent's outbox)."""

    def publish_durable(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, props: dict[str, Any] | None = None,
                        kind: str = "", alarm: tuple[str, str, str, float, int] | None = None, condition: str = "model",
                        records: list[Record] | None = None) -> bool: ...

    def record(self, records: list[Record], alarm: tuple[str, str, str, float, int] | None = None, condition: str = "model") -> None: ...


@dataclass(slots=True)
class Condition:
    """One alarm of one series as the operator sees it. ``raised`` is the raise's alarm message."""

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
        r = self.raised
        return {
            "series": r["series"], "condition": r.get("limit") or "model", "source": r.get("source", "model"),
            "limit": r.get("limit"), "alert_id": r["alert_id"], "seq": r.get("seq"), "state": self.state,
            "active": self.active, "acked": self.acked_at is not None, "priority": self.priority,
            "priority_name": Priority(self.priority).label, "raised_ts": r["ts"], "raised_at": self.raised_at,
            "value": r.get("value"), "unit": r.get("unit"), "kind": r.get("kind"), "direction": r.get("direction"),
            "expected": r.get("expected"), "setpoint": r.get("setpoint"), "message": r.get("message"),
            "cleared_ts": self.cleared_ts, "end": self.end, "acked_at": self.acked_at, "acked_by": self.acked_by,
            "ack_note": self.ack_note, "announced": self.announced,
        }


@dataclass(slots=True)
class Shelve:
    series: str
    since: float
    until: float
    reason: str
    by: str
    suppressed: int = 0  # raises not published while shelved

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


class Annunciator:
    def __init__(self, cfg: AgentConfig, sink: Sink, lookup: Callable[[str], Series | None], clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.sink = sink
        self.lookup = lookup
        self.clock = clock
        self.conditions: dict[str, dict[str, Condition]] = {}
        self.shelves: dict[str, Shelve] = {}
        self.rate = AlarmRate(clock=clock)  # alarms published
        self.suppressed_rate = AlarmRate(clock=clock)  # raises held back by shelves
        self.flood_at = cfg.alarms.flood_per_10min
        self.published = 0
        self.suppressed = 0
        self.acks = 0

    # ---- the pipeline's events ----------------------------------------------------------------
    def on_event(self, ev: AlarmEvent) -> None:
        sid, name = ev.series, ev.condition
        s = self.lookup(sid)
        doc = alarm_doc(ev, self.cfg.gateway_id, s.settings.description if s is not None else None)
        conds = self.conditions.setdefault(sid, {})
        shelf = self.shelves.get(sid)
        alarm = (ev.state, sid, ev.raised_alert_id or ev.alert_id, ev.ts, ev.seq)
        if ev.state == "raised":
            cond = conds[name] = Condition(doc, self.clock(), announced=shelf is None)
            records = [self._record(sid, name, cond)]
            if shelf is None:
                self._announce(doc, alarm, name, records)
            else:
                shelf.suppressed += 1
                self.suppressed += 1
                self.suppressed_rate.add()
                records.append(("shelve", (sid,), json.dumps(shelf.view())))
                self._state(sid, records, alarm, name)
                return
        else:
            cond = conds.get(name)
            if cond is not None:
                cond.active, cond.cleared_ts, cond.end = False, ev.ts, ev.state
            if cond is None or cond.announced:
                doc["acked"] = cond is not None and cond.acked_at is not None
                forget = cond is None or cond.acked_at is not None
                if forget:
                    conds.pop(name, None)
                records = [("condition", (sid, name), None) if forget else self._record(sid, name, cond)]  # type: ignore[arg-type]
                self._announce(doc, alarm, name, records)
            else:  # raised and ended under a shelve: SCADA never saw it, nobody need acknowledge it
                conds.pop(name, None)
                self._state(sid, [("condition", (sid, name), None)], alarm, name)
                return
        if not conds:
            self.conditions.pop(sid, None)
        self._state(sid, [])

    def _announce(self, doc: dict[str, Any], alarm: Any, condition: str, records: list[Record]) -> None:
        topic = render(self.cfg.alarms.topic, {"gateway_id": self.cfg.gateway_id, "series": doc["series"]})
        if doc["state"] == "raised":
            self.rate.add()
        self.published += 1
        if not self.sink.publish_durable(topic, strict_json(doc), self.cfg.alarms.qos, kind="alarm", alarm=alarm,
                                         condition=condition, records=records):
            self.sink.record(records, alarm, condition)  # unsendable: the state still holds

    def _state(self, sid: str, records: list[Record], alarm: Any = None, condition: str = "model") -> None:
        """The series' state document on the retained state topic, with ``records`` in its commit."""
        tpl = self.cfg.alarms.state_topic
        if tpl:
            topic = render(tpl, {"gateway_id": self.cfg.gateway_id, "series": sid})
            if self.sink.publish_durable(topic, strict_json(self.state_doc(sid)), 1, retain=True, alarm=alarm,
                                         condition=condition, records=records):
                return
        if records or alarm is not None:
            self.sink.record(records, alarm, condition)

    @staticmethod
    def _record(sid: str, name: str, cond: Condition) -> Record:
        return ("condition", (sid, name), json.dumps(asdict(cond), separators=(",", ":"), allow_nan=False, default=str))

    # ---- operator actions ---------------------------------------------------------------------
    def ack(self, sid: str, condition: str | None = None, alert_id: str | None = None, by: str = "", note: str = "") -> list[dict[str, Any]]:
        """Acknowledge the unacknowledged alarms of ``sid`` (those of ``condition`` or with
        ``alert_id`` only, if given). Returns what was acknowledged."""
        conds = self.conditions.get(sid, {})
        now = self.clock()
        done, records = [], []
        for name, cond in list(conds.items()):
            if cond.acked_at is not None or (condition and name != condition) or (alert_id and cond.raised["alert_id"] != alert_id):
                continue
            cond.acked_at, cond.acked_by, cond.ack_note = now, by, note or None
            done.append(cond.view())
            if cond.active:
                records.append(self._record(sid, name, cond))
            else:
                del conds[name]
                records.append(("condition", (sid, name), None))
        if not conds:
            self.conditions.pop(sid, None)
        if done:
            self.acks += len(done)
            self._state(sid, records)
        return done

    def shelve(self, sid: str, duration_s: float, reason: str, by: str) -> dict[str, Any]:
        now = self.clock()
        old = self.shelves.get(sid)
        shelf = self.shelves[sid] = Shelve(sid, old.since if old else now, now + duration_s, reason, by, old.suppressed if old else 0)
        self._state(sid, [("shelve", (sid,), json.dumps(shelf.view()))])
        log.info("series %r shelved by %s for %.0f s: %s", sid, by, duration_s, reason)
        return shelf.view()

    def unshelve(self, sid: str, by: str, why: str = "unshelved") -> dict[str, Any] | None:
        """End a shelve; publish the alarms raised under it that are still active."""
        shelf = self.shelves.pop(sid, None)
        if shelf is None:
            return None
        announced = []
        for name, cond in self.conditions.get(sid, {}).items():
            if cond.active and not cond.announced:
                cond.announced = True
                doc = {**cond.raised, "after_shelve": True,
                       "message": f"{cond.raised.get('message', '')} (raised while shelved; still active when the shelve ended)"}
                self._announce(doc, None, name, [self._record(sid, name, cond)])
                announced.append(cond.raised["alert_id"])
        self._state(sid, [("shelve", (sid,), None)])
        log.info("series %r: shelve ended (%s, by %s); %d alarm(s) raised under it announced now", sid, why, by, len(announced))
        return {**shelf.view(), "ended": why, "ended_by": by, "announced": announced}

    def expire(self) -> int:
        """End the shelves whose time is up (called every second); returns how many."""
        now = self.clock()
        due = [sid for sid, sh in self.shelves.items() if sh.until <= now]
        for sid in due:
            self.unshelve(sid, "the shelve's duration", why="expired")
        return len(due)

    # ---- views --------------------------------------------------------------------------------
    def flood(self) -> bool:
        return self.rate.count() > self.flood_at

    def state_doc(self, sid: str) -> dict[str, Any]:
        s = self.lookup(sid)
        st = s.settings if s is not None else None
        conds = sorted(self.conditions.get(sid, {}).values(), key=lambda c: (not c.active, -c.priority))
        shelf = self.shelves.get(sid)
        return {
            "gateway_id": self.cfg.gateway_id,
            "series": sid,
            "ts": self.clock(),
            "state": s.state if s is not None else "unknown",
            "enabled": st.enabled if st is not None else None,
            "priority": int(st.priority) if st is not None else None,
            "unit": st.unit if st is not None else None,
            "description": st.description if st is not None else None,
            "shelved": shelf.view() if shelf is not None else None,
            "alarms": [c.view() for c in conds],
        }

    def listing(self) -> list[Condition]:
        """Every condition an operator should see: active first, then by priority, newest first."""
        rows = [c for conds in self.conditions.values() for c in conds.values()]
        rows.sort(key=lambda c: (not c.active, -c.priority, -c.raised_at))
        return rows

    def counts(self) -> dict[tuple[str, int], int]:
        """Conditions by (state, priority)."""
        out: dict[tuple[str, int], int] = {}
        for conds in self.conditions.values():
            for c in conds.values():
                out[(c.state, c.priority)] = out.get((c.state, c.priority), 0) + 1
        return out

    # ---- restart ------------------------------------------------------------------------------
    def restore(self, conditions: Iterable[tuple[str, str, str]], shelves: Iterable[tuple[str, str]]) -> list[tuple[str, str, Condition]]:
        """What the outbox file held; returns the active conditions (for the pipeline to hold)."""
        active = []
        for sid, name, doc in conditions:
            try:
                if len(doc) > MAX_DOC:
                    raise ValueError("record too long")
                cond = Condition(**json.loads(doc))
                if not isinstance(cond.raised, dict) or cond.raised.get("series") != sid:
                    raise ValueError("not this series' record")
            except (ValueError, TypeError) as exc:
                log.error("outbox: alarm condition %r of %r cannot be read (%s): skipped", name, sid, exc)
                continue
            self.conditions.setdefault(sid, {})[name] = cond
            if cond.active:
                active.append((sid, name, cond))
        for sid, doc in shelves:
            try:
                if len(doc) > MAX_DOC:
                    raise ValueError("record too long")
                self.shelves[sid] = Shelve(**json.loads(doc))
            except (ValueError, TypeError) as exc:
                log.error("outbox: shelve of %r cannot be read (%s): skipped", sid, exc)
        return active

    def adopt_open(self, sid: str, alert_id: str, ts: float, priority: int) -> None:
        """An alarm open in an outbox of an agent without operator records: unacknowledged."""
        if "model" not in self.conditions.get(sid, {}):
            doc = {"alert_id": alert_id, "series": sid, "state": "raised", "ts": ts, "priority": priority, "source": "model",
                   "message": "raised before the agent restarted"}
            self.conditions.setdefault(sid, {})["model"] = Condition(doc, self.clock())

