"""What operators live with: each alarm's state, acknowledgement and shelving, and the alarm rate.

Between the pipeline (which decides that an alarm is raised or ends) and the outbox (which
delivers). The states are ISA-18.2's, per alarm *condition* of a series (the learned model's,
and each engineering limit's: ``limits.py``) or of a machine (its model's: ``on_machine_event``;
a machine is one more kind of condition owner, ``alarm_conditions.py``, and everything below
holds for it, on its own topics ``machines.alarms.topic`` / ``state_topic``):

==================  ============================================================================
state               meaning
==================  ============================================================================
active_unacked      raised, nobody has acknowledged it yet
active_acked        raised and acknowledged: the operator knows; it stays until it clears
cleared_unacked     it ended (cleared or accepted) before anyone acknowledged it: it stays in the
                    list until acknowledged (a fault that came and went is still news)
(normal)            ended and acknowledged: the condition is forgotten
==================  ============================================================================

A series or a machine can also be **shelved** (an operator's decision, with a reason and a
duration, e.g. for maintenance); a series can be **disabled** by its rules (``enabled: false``,
ISA's "suppressed by design": not scored at all). A shelved series (machine) is still scored and
its alarm state still runs:

- a raise while shelved is **not published** on the alarm topic; it is counted (``suppressed``)
  and shown on the page and the state topic as active and shelved;
- the end of an alarm SCADA already has is published as always, so SCADA never keeps a stale
  alarm; the end of one raised under the shelve is not (SCADA never saw it);
- when the shelve ends (``unshelve``, or its time is up) each alarm raised under it that is
  **still active is published then**, as ``raised`` with its original ``alert_id``, reading and
  timestamp and ``after_shelve: true``: the condition is still there and SCADA must know.

The retained state topic (``alarms.state_topic``; ``machines.alarms.state_topic``) carries, per
series (machine), the whole picture: settings, shelve, and every condition with its state
(``state_doc``); it is published on every change. What operators did is committed to the outbox's SQLite file (``alarm_condition``,
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
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Protocol

from edge_agent.alarm_conditions import (
    ACTIVE_ACKED,
    ACTIVE_UNACKED,
    CLEARED_UNACKED,
    MACHINE,
    STATES,
    AlarmRate,
    Condition,
    Shelve,
    describe,
    key_of_doc,
    owner_key,
    owner_of,
)
from edge_agent.alarm_payload import alarm_doc, strict_json
from edge_agent.priority import Priority
from edge_agent.topics import render

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.machines.machine_set import MachineAlarmEvent
    from edge_agent.outbox_tables import Record
    from edge_agent.pipeline import AlarmEvent
    from edge_agent.series import Series

__all__ = ["ACTIVE_ACKED", "ACTIVE_UNACKED", "CLEARED_UNACKED", "STATES", "AlarmRate", "Annunciator", "Condition", "Shelve", "Sink"]

log = logging.getLogger(__name__)

MAX_DOC = 65536  # a stored record longer than this is not loaded (it cannot be one of ours)


class Sink(Protocol):
    """Where the annunciator's messages and records go (the agent's outbox)."""

    def publish_durable(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, props: dict[str, Any] | None = None,
                        kind: str = "", alarm: tuple[str, str, str, float, int] | None = None, condition: str = "model",
                        records: list[Record] | None = None) -> bool: ...

    def record(self, records: list[Record], alarm: tuple[str, str, str, float, int] | None = None, condition: str = "model") -> None: ...


class Annunciator:
    """Every alarm condition an operator sees, of series and of machines, keyed by owner
    (``alarm_conditions.owner_key``: the series' id, or the machine's key in the outbox tables)."""

    def __init__(self, cfg: AgentConfig, sink: Sink, lookup: Callable[[str], Series | None], clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.sink = sink
        self.lookup = lookup
        # A machine by id (with ``.state``), set by machines/live.py when the agent has machines.
        self.machine_lookup: Callable[[str], Any] | None = None
        self.clock = clock
        self.conditions: dict[str, dict[str, Condition]] = {}
        self.shelves: dict[str, Shelve] = {}
        self.rate = AlarmRate(clock=clock)  # alarms published
        self.suppressed_rate = AlarmRate(clock=clock)  # raises held back by shelves
        self.flood_at = cfg.alarms.flood_per_10min
        self.machine_priority = Priority(cfg.machines.alarms.priority)
        self.published = 0
        self.suppressed = 0
        self.acks = 0

    # ---- the pipeline's and the machines' events ------------------------------------------------
    def on_event(self, ev: AlarmEvent) -> None:
        """A series' alarm edge (``pipeline.py``): raised, cleared or accepted."""
        s = self.lookup(ev.series)
        doc = alarm_doc(ev, self.cfg.gateway_id, s.settings.description if s is not None else None)
        self._edge(ev.series, ev.condition, ev.state, doc, (ev.state, ev.series, ev.raised_alert_id or ev.alert_id, ev.ts, ev.seq))

    def on_machine_event(self, ev: MachineAlarmEvent) -> None:
        """A machine's alarm edge (``machines/machine_set.py``): one condition, ``model``, with
        the machine's priority (``machines.alarms.priority``)."""
        key = owner_key(machine=ev.machine)
        doc = ev.payload(self.cfg.gateway_id)
        doc["priority"], doc["priority_name"] = int(self.machine_priority), self.machine_priority.label
        self._edge(key, "model", ev.state, doc, (ev.state, key, ev.raised_alert_id or ev.alert_id, ev.ts, ev.seq))

    def _edge(self, key: str, name: str, state: str, doc: dict[str, Any], alarm: tuple[str, str, str, float, int]) -> None:
        conds = self.conditions.setdefault(key, {})
        shelf = self.shelves.get(key)
        if state == "raised":
            cond = conds[name] = Condition(doc, self.clock(), announced=shelf is None)
            records = [self._record(key, name, cond)]
            if shelf is None:
                self._announce(doc, alarm, name, records)
            else:
                shelf.suppressed += 1
                self.suppressed += 1
                self.suppressed_rate.add()
                records.append(("shelve", (key,), json.dumps(shelf.view())))
                self._state(key, records, alarm, name)
                return
        else:
            cond = conds.get(name)
            if cond is not None:
                cond.active, cond.cleared_ts, cond.end = False, doc["ts"], state
            if cond is None or cond.announced:
                doc["acked"] = cond is not None and cond.acked_at is not None
                forget = cond is None or cond.acked_at is not None
                if forget:
                    conds.pop(name, None)
                records = [("condition", (key, name), None) if forget else self._record(key, name, cond)]  # type: ignore[arg-type]
                self._announce(doc, alarm, name, records)
            else:  # raised and ended under a shelve: SCADA never saw it, nobody need acknowledge it
                conds.pop(name, None)
                self._state(key, [("condition", (key, name), None)], alarm, name)
                return
        if not conds:
            self.conditions.pop(key, None)
        self._state(key, [])

    def _announce(self, doc: dict[str, Any], alarm: Any, condition: str, records: list[Record]) -> None:
        gateway = self.cfg.gateway_id
        if doc.get("machine") is not None:
            mc = self.cfg.machines.alarms
            topic, qos = render(mc.topic, {"gateway_id": gateway, "machine": doc["machine"]}), mc.qos
        else:
            topic, qos = render(self.cfg.alarms.topic, {"gateway_id": gateway, "series": doc["series"]}), self.cfg.alarms.qos
        if doc["state"] == "raised":
            self.rate.add()
        self.published += 1
        if not self.sink.publish_durable(topic, strict_json(doc), qos, kind="alarm", alarm=alarm, condition=condition, records=records):
            self.sink.record(records, alarm, condition)  # unsendable: the state still holds

    def _state(self, key: str, records: list[Record], alarm: Any = None, condition: str = "model") -> None:
        """The owner's state document on its retained state topic, with ``records`` in its commit."""
        kind, oid = owner_of(key)
        tpl = self.cfg.machines.alarms.state_topic if kind == MACHINE else self.cfg.alarms.state_topic
        if tpl:
            topic = render(tpl, {"gateway_id": self.cfg.gateway_id, kind: oid})
            if self.sink.publish_durable(topic, strict_json(self.state_doc(key)), 1, retain=True, alarm=alarm,
                                         condition=condition, records=records):
                return
        if records or alarm is not None:
            self.sink.record(records, alarm, condition)

    @staticmethod
    def _record(key: str, name: str, cond: Condition) -> Record:
        return ("condition", (key, name), json.dumps(asdict(cond), separators=(",", ":"), allow_nan=False, default=str))

    # ---- operator actions (``key``: owner_key(series) or owner_key(machine=...)) ------------------
    def ack(self, key: str, condition: str | None = None, alert_id: str | None = None, by: str = "", note: str = "") -> list[dict[str, Any]]:
        """Acknowledge the unacknowledged alarms of ``key`` (those of ``condition`` or with
        ``alert_id`` only, if given). Returns what was acknowledged."""
        conds = self.conditions.get(key, {})
        now = self.clock()
        done, records = [], []
        for name, cond in list(conds.items()):
            if cond.acked_at is not None or (condition and name != condition) or (alert_id and cond.raised["alert_id"] != alert_id):
                continue
            cond.acked_at, cond.acked_by, cond.ack_note = now, by, note or None
            done.append(cond.view())
            if cond.active:
                records.append(self._record(key, name, cond))
            else:
                del conds[name]
                records.append(("condition", (key, name), None))
        if not conds:
            self.conditions.pop(key, None)
        if done:
            self.acks += len(done)
            self._state(key, records)
        return done

    def shelve(self, key: str, duration_s: float, reason: str, by: str) -> dict[str, Any]:
        now = self.clock()
        old = self.shelves.get(key)
        shelf = self.shelves[key] = Shelve.of(key, old.since if old else now, now + duration_s, reason, by, old.suppressed if old else 0)
        self._state(key, [("shelve", (key,), json.dumps(shelf.view()))])
        log.info("%s shelved by %s for %.0f s: %s", describe(key), by, duration_s, reason)
        return shelf.view()

    def unshelve(self, key: str, by: str, why: str = "unshelved") -> dict[str, Any] | None:
        """End a shelve; publish the alarms raised under it that are still active."""
        shelf = self.shelves.pop(key, None)
        if shelf is None:
            return None
        announced = []
        for name, cond in self.conditions.get(key, {}).items():
            if cond.active and not cond.announced:
                cond.announced = True
                doc = {**cond.raised, "after_shelve": True,
                       "message": f"{cond.raised.get('message', '')} (raised while shelved; still active when the shelve ended)"}
                self._announce(doc, None, name, [self._record(key, name, cond)])
                announced.append(cond.raised["alert_id"])
        self._state(key, [("shelve", (key,), None)])
        log.info("%s: shelve ended (%s, by %s); %d alarm(s) raised under it announced now", describe(key), why, by, len(announced))
        return {**shelf.view(), "ended": why, "ended_by": by, "announced": announced}

    def expire(self) -> int:
        """End the shelves whose time is up (called every second); returns how many."""
        now = self.clock()
        due = [key for key, sh in self.shelves.items() if sh.until <= now]
        for key in due:
            self.unshelve(key, "the shelve's duration", why="expired")
        return len(due)

    # ---- views --------------------------------------------------------------------------------
    def flood(self) -> bool:
        return self.rate.count() > self.flood_at

    def state_doc(self, key: str) -> dict[str, Any]:
        conds = sorted(self.conditions.get(key, {}).values(), key=lambda c: (not c.active, -c.priority))
        shelf = self.shelves.get(key)
        kind, oid = owner_of(key)
        if kind == MACHINE:
            m = self.machine_lookup(oid) if self.machine_lookup is not None else None
            return {"gateway_id": self.cfg.gateway_id, "machine": oid, "ts": self.clock(),
                    "state": m.state if m is not None else "unknown", "priority": int(self.machine_priority),
                    "shelved": shelf.view() if shelf is not None else None, "alarms": [c.view() for c in conds]}
        s = self.lookup(oid)
        st = s.settings if s is not None else None
        return {
            "gateway_id": self.cfg.gateway_id,
            "series": oid,
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
        for key, name, doc in conditions:
            try:
                if len(doc) > MAX_DOC:
                    raise ValueError("record too long")
                cond = Condition(**json.loads(doc))
                if not isinstance(cond.raised, dict) or key_of_doc(cond.raised) != key:
                    raise ValueError("not this owner's record")
            except (ValueError, TypeError) as exc:
                log.error("outbox: alarm condition %r of %r cannot be read (%s): skipped", name, key, exc)
                continue
            self.conditions.setdefault(key, {})[name] = cond
            if cond.active:
                active.append((key, name, cond))
        for key, doc in shelves:
            try:
                if len(doc) > MAX_DOC:
                    raise ValueError("record too long")
                shelf = Shelve(**json.loads(doc))
                if shelf.key != key:
                    raise ValueError("not this owner's record")
                self.shelves[key] = shelf
            except (ValueError, TypeError) as exc:
                log.error("outbox: shelve of %r cannot be read (%s): skipped", key, exc)
        return active

    def adopt_open(self, key: str, alert_id: str, ts: float, priority: int) -> None:
        """An alarm open in an outbox of an agent without operator records: unacknowledged."""
        if "model" not in self.conditions.get(key, {}):
            kind, oid = owner_of(key)
            doc = {"alert_id": alert_id, kind: oid, "state": "raised", "ts": ts, "priority": priority, "source": "model",
                   "message": "raised before the agent restarted"}
            self.conditions.setdefault(key, {})["model"] = Condition(doc, self.clock())
