"""The annunciator's rules in process (the broker and restart path: test_alarm_lifecycle_e2e.py):
what a shelve holds back and publishes when it ends, acknowledgement of ended alarms, the
alarm rate and flood, and records it cannot read."""

from __future__ import annotations

import json
from typing import Any

from edge_agent.annunciator import Annunciator
from edge_agent.config import AgentConfig
from edge_agent.pipeline import AlarmEvent


class Sink:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any], bool]] = []
        self.records: list[Any] = []

    def publish_durable(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, props: Any = None, kind: str = "",
                        alarm: Any = None, condition: str = "model", records: Any = None) -> bool:
        self.published.append((topic, json.loads(payload), retain))
        self.records += records or []
        return True

    def record(self, records: Any, alarm: Any = None, condition: str = "model") -> None:
        self.records += records

    def alarms(self) -> list[dict[str, Any]]:
        return [doc for topic, doc, _ in self.published if "/alerts/" in topic]


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def make(**alarms: Any) -> tuple[Annunciator, Sink, Clock]:
    cfg = AgentConfig.model_validate({"alarms": {"state_topic": "edge/{gateway_id}/state/{series}", **alarms}})
    sink, clock = Sink(), Clock()
    return Annunciator(cfg, sink, lambda sid: None, clock), sink, clock


def event(state: str, seq: int, ts: float, sid: str = "m1/temp", raised_id: str | None = None) -> AlarmEvent:
    return AlarmEvent(f"{sid}-{state}-{seq}", sid, state, ts, 30.0, 5.0, 3.0, "statistical", 1, raised_id, seq=seq, priority=3)


def test_a_shelve_holds_back_raises_and_publishes_those_still_active_when_it_expires() -> None:
    ann, sink, clock = make()
    ann.shelve("m1/temp", 60.0, "maintenance", "ann")
    ann.on_event(event("raised", 1, 1.0))
    ann.on_event(event("cleared", 1, 2.0, raised_id="m1/temp-raised-1"))  # came and went under the shelve
    ann.on_event(event("raised", 2, 3.0))
    assert sink.alarms() == [] and ann.suppressed == 2 and ann.shelves["m1/temp"].suppressed == 2
    assert [c.view()["alert_id"] for c in ann.listing()] == ["m1/temp-raised-2"]  # the first needs no ack
    clock.t += 59
    assert ann.expire() == 0
    clock.t += 1
    assert ann.expire() == 1 and "m1/temp" not in ann.shelves
    late = sink.alarms()
    assert [(a["alert_id"], a["state"], a["after_shelve"], a["seq"]) for a in late] == [("m1/temp-raised-2", "raised", True, 2)]
    assert ann.rate.count() == 1  # counted when published


def test_the_end_of_an_alarm_scada_has_is_published_while_shelved() -> None:
    ann, sink, _ = make()
    ann.on_event(event("raised", 1, 1.0))
    ann.shelve("m1/temp", 60.0, "maintenance", "ann")
    ann.on_event(event("cleared", 1, 2.0, raised_id="m1/temp-raised-1"))
    assert [(a["state"], a.get("acked")) for a in sink.alarms()] == [("raised", None), ("cleared", False)]
    # Ended unacknowledged: listed until acknowledged, then gone.
    assert [c.state for c in ann.listing()] == ["cleared_unacked"]
    assert [a["state"] for a in ann.ack("m1/temp", by="ann")] == ["cleared_unacked"]
    assert ann.listing() == [] and sink.records[-1] == ("condition", ("m1/temp", "model"), None)


def test_alarm_rate_over_ten_minutes_and_flood() -> None:
    ann, _, clock = make(flood_per_10min=3)
    for k in range(4):
        ann.on_event(event("raised", k + 1, float(k), sid=f"s{k}"))
    assert ann.rate.count() == 4 and ann.flood()
    clock.t += 601
    assert ann.rate.count() == 0 and not ann.flood()


def test_records_it_cannot_read_are_skipped_with_a_log(caplog: Any) -> None:
    ann, _, _ = make()
    good = json.dumps({"raised": {"alert_id": "a", "series": "s", "ts": 1.0, "priority": 4}, "raised_at": 1.0})
    wrong_series = json.dumps({"raised": {"alert_id": "b", "series": "other", "ts": 1.0}, "raised_at": 1.0})
    active = ann.restore([("s", "model", good), ("s", "hi", wrong_series), ("s", "lo", "{not json"), ("s", "x", "x" * 70_000)],
                         [("s", json.dumps({"series": "s", "since": 0, "until": 1e12, "reason": "r", "by": "b"})), ("t", "[]")])
    assert [(sid, name) for sid, name, _ in active] == [("s", "model")]
    assert list(ann.shelves) == ["s"]
    assert caplog.text.count("cannot be read") == 4
