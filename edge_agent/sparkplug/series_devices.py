"""The series as devices of the agent's Sparkplug edge node: their births, alarms and changes.

``devices.py`` says *what* is declared (which device a series belongs to, its metrics and
their aliases); this module *publishes* it, in a session the edge node (``node.py``) holds:

* **births**: one DBIRTH per device, in device order, with the *current* value of every
  metric of its series (``birth``); a device is born again with a series first heard of in
  the session (``dbirth``), before that series' first DDATA;
* **alarms**: an alarm state change is committed to the edge node's outbox in the callback
  that raised it (``on_alarm``: the change, not the wire bytes) and published by
  ``alarm_row`` when the outbox hands it back, encoded then with the session's seq and
  aliases; a row committed before the current birth is sent with ``is_historical``, one of
  a series evicted since (the series budget) is dropped: it is in no DBIRTH;
* **changes**: scores, thresholds, model versions and states that changed since last
  published, at most every ``sparkplug.score_interval_s`` (``changes``; ``score_deadband``
  for scores).

Kept apart from the edge node's session (connection, bdSeq, seq, NBIRTH/NDEATH, STATE,
rebirth requests), which it reaches only through ``node.send``, ``node.session``,
``node.born`` / ``node.born_at`` and ``node.outbox``: it is the series' twin of
``machine_devices.py``, which does the same for machines.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from edge_agent.outbox import OutMessage
from edge_agent.pipeline import AlarmEvent
from edge_agent.sparkplug import devices, schema
from edge_agent.sparkplug.schema import Payload, now_ms

if TYPE_CHECKING:
    from edge_agent.sparkplug.node import EdgeNode

_DEVICES_PER_PASS = 20  # DBIRTHs encoded per event-loop pass during a birth sequence
_SERIES_PER_PASS = 500  # series compared per event-loop pass in the periodic scan


class SeriesDevices:
    """The series side of ``node.EdgeNode``: it calls ``birth``, ``alarm_row`` (for outbox rows
    naming a series) and ``changes``; ``on_alarm`` is a hook of the agent's pipeline."""

    def __init__(self, node: EdgeNode, segments: int) -> None:
        self.node = node
        self.catalogue = devices.Catalogue(segments)
        self.declared: dict[str, list[str]] = {}  # device -> series declared in its DBIRTH
        self.sent: dict[str, tuple[Any, ...]] = {}  # series -> metric values last published
        self.last_events: dict[str, AlarmEvent] = {}

    # ---- births --------------------------------------------------------------------------
    async def birth(self, session: int) -> bool:
        """One DBIRTH per device, in device order. False when the connection is gone or the
        session ended meanwhile; ``declared`` then holds the devices born."""
        self.declared, self.sent = {}, {}
        by_device: dict[str, list[str]] = {}
        for sid in self.node.agent.pipeline.series:
            by_device.setdefault(self.catalogue.place(sid)[0], []).append(sid)
        for i, (device, sids) in enumerate(sorted(by_device.items())):
            if not self.dbirth(device, sids):
                return False
            if i % _DEVICES_PER_PASS == _DEVICES_PER_PASS - 1:
                if not await self.node.yield_to_loop(session):
                    return False
        return True

    def dbirth(self, device: str, sids: list[str]) -> bool:
        ts = now_ms()
        p = Payload(timestamp=ts)
        series = self.node.agent.pipeline.series
        declared = []
        for sid in sids:
            s = series.get(sid)
            if s is None:
                continue
            _, folder, base = self.catalogue.place(sid)
            vals = devices.values(s, self.last_events.get(sid))
            for j, (suffix, dt, _) in enumerate(devices.SERIES_METRICS):
                schema.set_value(p.metrics.add(name=folder + suffix, alias=base + j, timestamp=ts, datatype=dt), dt, vals[j])
            self.sent[sid] = vals
            declared.append(sid)
        if not self.node.send("DBIRTH", device, p):
            return False
        self.declared[device] = declared
        return True

    # ---- alarms --------------------------------------------------------------------------
    def on_alarm(self, ev: AlarmEvent) -> None:
        self.last_events[ev.series] = ev
        doc = {"series": ev.series, "state": ev.state, "ts": ev.ts, "score": ev.score, "threshold": ev.threshold,
               "version": ev.version, "alert_id": ev.alert_id}
        for field, _, _ in devices.OPTIONAL_EVENT_FIELDS:
            if hasattr(ev, field):
                doc[field] = getattr(ev, field)
        self.node.outbox.put(OutMessage("sparkplug/alarm", json.dumps(doc, default=str).encode(), qos=0))

    def alarm_row(self, sid: str, raised: bool, doc: dict[str, Any], msg: OutMessage) -> bool:
        """DDATA of one committed alarm change of series ``sid``; False when the connection is gone."""
        device, folder, base = self.catalogue.place(sid)
        historical = msg.created < self.node.born_at
        if sid not in self.sent:
            if sid not in self.node.agent.pipeline.series:
                # Evicted for the series budget before this session's births: in no DBIRTH, so
                # no metric to publish to (its JSON alarm carried the change). Dropped, not
                # failed: a failure would hold up every row behind it.
                return True
            # First heard of in this session: its device is born again with it (current values).
            if not self.dbirth(device, self.declared.get(device, []) + [sid]):
                return False
            historical = True
        event = {"Alarm": raised, "Alarm Id": doc.get("alert_id") if raised else None, "Anomaly Score": doc.get("score"),
                 "Threshold": doc.get("threshold"), "Model Version": doc.get("version"), "State": "alarm" if raised else "normal"}
        for field, suffix, _ in devices.OPTIONAL_EVENT_FIELDS:
            if field in doc:
                event[suffix] = doc[field]
        ts = int(float(doc.get("ts", time.time())) * 1000)
        p = Payload(timestamp=now_ms())
        sent = list(self.sent[sid])
        for j, (suffix, dt, _) in enumerate(devices.SERIES_METRICS):
            if suffix in event:
                m = p.metrics.add(alias=base + j, timestamp=ts)
                if historical:
                    m.is_historical = True
                else:
                    sent[j] = event[suffix]
                schema.set_value(m, dt, event[suffix])
        if not self.node.send("DDATA", device, p):
            return False
        self.sent[sid] = tuple(sent)
        return True

    # ---- periodic ------------------------------------------------------------------------
    async def changes(self, session: int, ts: int, deadband: float) -> bool:
        """What changed since last published, at time ``ts`` (ms), devices of new series born
        again first. False when the connection is gone or the session ended meanwhile."""
        series = self.node.agent.pipeline.series
        new: dict[str, list[str]] = {}
        for sid in list(series):
            if sid not in self.sent:
                device = self.catalogue.place(sid)[0]
                new.setdefault(device, list(self.declared.get(device, []))).append(sid)
        for device, sids in new.items():
            if not self.dbirth(device, sids):
                return False
        compared = 0
        for device, sids in list(self.declared.items()):
            if compared >= _SERIES_PER_PASS:
                # Thousands of series: let readings in between (a few µs per series compared).
                compared = 0
                if not await self.node.yield_to_loop(session, born=True):
                    return False
            compared += len(sids)
            p = Payload(timestamp=ts)
            for sid in sids:
                s = series.get(sid)
                old = self.sent.get(sid)
                if s is None or old is None:
                    continue
                vals = devices.values(s, self.last_events.get(sid))
                if vals == old:
                    continue
                base = self.catalogue.place(sid)[2]
                kept = list(vals)
                for j, (_, dt, _) in enumerate(devices.SERIES_METRICS):
                    if vals[j] == old[j]:
                        continue
                    if j == devices.SCORE and deadband and vals[j] is not None and old[j] is not None and abs(vals[j] - old[j]) <= deadband:
                        kept[j] = old[j]
                        continue
                    schema.set_value(p.metrics.add(alias=base + j, timestamp=ts), dt, vals[j])
                self.sent[sid] = tuple(kept)
            if len(p.metrics) and not self.node.send("DDATA", device, p):
                return False
        return True
