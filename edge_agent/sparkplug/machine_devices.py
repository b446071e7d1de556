"""Machines as devices of the agent's Sparkplug edge node (issue 14 point 4).

Each machine is one Sparkplug *device* whose DBIRTH declares its own metrics (``METRICS``):
the machine's anomaly score and threshold, its alarm (with id and priority), the sensors that
explain it ("current high, flow low"), its model version and state. Its alarm changes go
through the edge node's durable outbox as a series' do (committed in the callback that raised
them, published after the births with ``is_historical`` when they predate the session), and
its score, state and the rest at most every ``sparkplug.score_interval_s``, only what changed.

**Device ids.** ``%machine:`` + the machine id's ``/``-separated parts, each escaped as a
series device's are (``devices.device_of``) and joined by ``:``: ``line1/p1`` is
``%machine:line1:p1``. A series device can never be one: its ``%`` is always the start of an
escape (``%25``, ``%3A``...), two upper-case hex digits, never ``%m``. Aliases start at
``FIRST_ALIAS``, far above the series' (``devices.FIRST_SERIES_ALIAS`` + 16 per series).

**Top sensors** are those of the machine's last alarm message (the ones it names, each "high"
or "low"), empty once the alarm ends; a machine found in alarm at birth with no event in this
process (restored at start) gets them from its detector then.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_agent.outbox import OutMessage
from edge_agent.sparkplug.devices import _DEVICE_UNSAFE
from edge_agent.sparkplug.schema import DataType, Payload, now_ms, set_value

if TYPE_CHECKING:
    from edge_agent.machines.machine_set import Machine, MachineAlarmEvent

PREFIX = "%machine:"
FIRST_ALIAS = 1 << 40
ALIAS_STRIDE = 16
_PER_PASS = 50  # machines born or compared per event-loop pass


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


class Extra:
    """What a machine's metrics need besides the machine: its priority and top sensors."""

    __slots__ = ("priority", "top")

    def __init__(self, priority: int, top: str) -> None:
        self.priority, self.top = priority, top


# (metric name, datatype, value from the machine)
METRICS: list[tuple[str, int, Callable[[Machine, Extra], Any]]] = [
    ("Anomaly Score", DataType.Double, lambda m, x: _finite(m.last_score)),
    ("Alarm", DataType.Boolean, lambda m, x: m.alarm.active),
    ("Alarm Id", DataType.String, lambda m, x: m.raised_id if m.alarm.active else None),
    ("Threshold", DataType.Double, lambda m, x: _finite(float(m.model.detector.threshold)) if m.model is not None else None),
    ("Model Version", DataType.Int64, lambda m, x: m.model.version if m.model is not None else None),
    ("State", DataType.String, lambda m, x: m.state),
    ("Alarm Priority", DataType.Int64, lambda m, x: x.priority),
    ("Top Sensors", DataType.String, lambda m, x: x.top),
]
SCORE = 0
_INDEX = {name: j for j, (name, _, _) in enumerate(METRICS)}


def device_of(machine_id: str) -> str:
    """The device id of a machine: ``line1/p1`` -> ``%machine:line1:p1``."""
    return PREFIX + ":".join(p.translate(_DEVICE_UNSAFE) for p in machine_id.split("/"))


def top_sensors(sensors: list[Any]) -> str:
    """"current high, flow low": the sensors an alarm message names (``machines/message.py``)."""
    from edge_agent.machines import message

    return ", ".join(f"{c.sensor} {c.what}" for c in message.named(sensors))


class MachineDevices:
    """The machine side of ``node.EdgeNode``: it calls ``birth``, ``alarm_row`` (for outbox rows
    naming a machine) and ``changes``; ``on_alarm`` is a hook of ``machines/live.py``."""

    def __init__(self, node: Any, live: Any) -> None:
        self.node = node
        self.live = live
        self.priority = int(node.agent.cfg.machines.alarms.priority)
        self.aliases: dict[str, int] = {}  # machine -> alias base, for the process
        self.sent: dict[str, tuple[Any, ...]] = {}  # machine -> values last published this session
        self.top: dict[str, str] = {}  # machine -> top sensors of its last alarm message
        live.hooks_on_alarm.append(self.on_alarm)

    def _base(self, mid: str) -> int:
        base = self.aliases.get(mid)
        if base is None:
            base = self.aliases[mid] = FIRST_ALIAS + ALIAS_STRIDE * len(self.aliases)
        return base

    def _values(self, m: Machine) -> tuple[Any, ...]:
        top = self.top.get(m.id)
        if top is None:
            if not m.alarm.active:
                top = self.top[m.id] = ""
            elif m.model is not None and m.n_scored:  # in alarm since before this start: ask the detector once
                top = self.top[m.id] = top_sensors(m.model.detector.contributions())
            else:
                top = ""  # no row scored since the start yet: asked again next time
        x = Extra(self.priority, top)
        return tuple(get(m, x) for _, _, get in METRICS)

    # ---- births --------------------------------------------------------------------------
    async def birth(self, session: int) -> bool:
        """One DBIRTH per machine, after the series'. False when the session ended meanwhile."""
        self.sent = {}
        for i, mid in enumerate(sorted(self.live.set.machines)):
            if not self.dbirth(mid):
                return False
            if i % _PER_PASS == _PER_PASS - 1:
                if not await self.node.yield_to_loop(session):
                    return False
        return True

    def dbirth(self, mid: str) -> bool:
        m = self.live.set.machines.get(mid)
        if m is None:
            return True
        ts = now_ms()
        p = Payload(timestamp=ts)
        vals = self._values(m)
        base = self._base(mid)
        for j, (name, dt, _) in enumerate(METRICS):
            set_value(p.metrics.add(name=name, alias=base + j, timestamp=ts, datatype=dt), dt, vals[j])
        if not self.node.send("DBIRTH", device_of(mid), p):
            return False
        self.sent[mid] = vals
        return True

    # ---- alarms --------------------------------------------------------------------------
    def on_alarm(self, ev: MachineAlarmEvent) -> None:
        """Commit the change to the edge node's outbox (published by ``alarm_row``), in the
        callback that raised it, as a series' (readings are acknowledged after both commits)."""
        top = top_sensors(ev.sensors) if ev.state == "raised" else ""
        self.top[ev.machine] = top
        doc = {"machine": ev.machine, "state": ev.state, "ts": ev.ts, "score": _finite(ev.score), "threshold": _finite(ev.threshold),
               "version": ev.version, "alert_id": ev.alert_id, "top": top}
        self.node.outbox.put(OutMessage("sparkplug/machine_alarm", json.dumps(doc).encode(), qos=0))

    def alarm_row(self, doc: dict[str, Any], msg: OutMessage) -> bool:
        """DDATA of one committed machine alarm change; False when the connection is gone."""
        mid = str(doc["machine"])
        raised = doc.get("state") == "raised"
        historical = msg.created < self.node.born_at
        if mid not in self.sent:  # first heard of in this session: born now, with its current values
            if not self.dbirth(mid):
                return False
            historical = True
        if mid not in self.sent:
            return True  # no such machine any more
        event = {"Alarm": raised, "Alarm Id": doc.get("alert_id") if raised else None, "Anomaly Score": doc.get("score"),
                 "Threshold": doc.get("threshold"), "Model Version": doc.get("version"), "State": "alarm" if raised else "normal",
                 "Top Sensors": doc.get("top") or "", "Alarm Priority": self.priority}
        ts = int(float(doc.get("ts", 0.0)) * 1000) or now_ms()
        p = Payload(timestamp=now_ms())
        base = self._base(mid)
        sent = list(self.sent[mid])
        for name, value in event.items():
            j = _INDEX[name]
            m = p.metrics.add(alias=base + j, timestamp=ts)
            if historical:
                m.is_historical = True
            else:
                sent[j] = value
            set_value(m, METRICS[j][1], value)
        if not self.node.send("DDATA", device_of(mid), p):
            return False
        self.sent[mid] = tuple(sent)
        return True

    # ---- periodic ------------------------------------------------------------------------
    async def changes(self, session: int, deadband: float) -> bool:
        """What changed since last published (new machines born first). False when the
        session ended meanwhile."""
        machines = self.live.set.machines
        for i, mid in enumerate(list(machines)):
            if i and not i % _PER_PASS:
                if not await self.node.yield_to_loop(session, born=True):
                    return False
            m = machines.get(mid)
            if m is None:
                continue
            old = self.sent.get(mid)
            if old is None:
                if not self.dbirth(mid):
                    return False
                continue
            vals = self._values(m)
            if vals == old:
                continue
            ts = now_ms()
            p = Payload(timestamp=ts)
            base = self._base(mid)
            kept = list(vals)
            for j, (_, dt, _) in enumerate(METRICS):
                if vals[j] == old[j]:
                    continue
                if j == SCORE and deadband and vals[j] is not None and old[j] is not None and abs(vals[j] - old[j]) <= deadband:
                    kept[j] = old[j]
                    continue
                set_value(p.metrics.add(alias=base + j, timestamp=ts), dt, vals[j])
            self.sent[mid] = tuple(kept)
            if len(p.metrics) and not self.node.send("DDATA", device_of(mid), p):
                return False
        return True
