"""A machine's alarm in the annunciator (issue 14 point 4, issue 16 for machines), in process: a
real ``MachineSet`` fed the simulated pump's relation break hands its events to a real
``Annunciator``, which treats the machine as one more condition owner: priority in the payload,
acknowledgement, shelving (a raise held back, announced when the shelve ends if still active),
the retained state topic, the alarm rate, and records that restore. The broker, the agent
process and the restart: ``test_machine_alarm_lifecycle_e2e.py``."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from test_annunciator import Clock, Sink

from edge_agent import operations
from edge_agent.alarm_conditions import owner_key
from edge_agent.annunciator import Annunciator
from edge_agent.config import AgentConfig
from edge_agent.machines import MachineSet
from edge_agent.machines.operations import UnknownMachine
from edge_agent.pipeline import AlarmEvent, InlineTrainer
from edge_agent.pump_sim import SENSORS, Pump

T0 = 1.7e9
KEY = owner_key(machine="l1/p1")


class Plant:
    """The pump ``l1/p1`` (relation break at row 1200, ramped in over 10 s, restored 60 s
    later), its MachineSet and the annunciator it reports to."""

    def __init__(self, **machine_alarms: Any) -> None:
        self.cfg = AgentConfig.model_validate({
            "gateway_id": "gw-t",
            "alarms": {"state_topic": "edge/{gateway_id}/state/{series}"},
            "machines": {"alarms": {"state_topic": "edge/{gateway_id}/machine_state/{machine}", **machine_alarms}},
        })
        self.sink, self.clock = Sink(), Clock()
        self.ann = Annunciator(self.cfg, self.sink, lambda sid: None, self.clock)
        self.ms = MachineSet(self.cfg, InlineTrainer(), self.ann.on_machine_event)
        self.ann.machine_lookup = self.ms.machines.get
        self.rng = random.Random(4)
        self.pump = Pump.random("p1", self.rng)
        self.t = 0
        self.agent = SimpleNamespace(annunciator=self.ann, cfg=self.cfg, machines=SimpleNamespace(set=self.ms))

    def run(self, until: int) -> None:
        for t in range(self.t, until):
            values, _ = self.pump.step(float(t), 1.0, self.rng, 1.0 if t == 1200 else 0.0, t == 1200)
            self.ms.feed_row("l1/p1", [(s, values[s]) for s in SENSORS], T0 + t)
        self.t = until

    def alarms(self) -> list[dict[str, Any]]:
        return [doc for topic, doc, _ in self.sink.published if topic.startswith("edge/gw-t/machine_alerts/")]

    def state(self) -> dict[str, Any]:
        return [doc for topic, doc, retain in self.sink.published if topic == "edge/gw-t/machine_state/l1/p1" and retain][-1]


def test_a_machine_alarm_is_published_with_its_priority_acked_and_forgotten_once_cleared() -> None:
    plant = Plant(priority="high")
    plant.run(1230)
    (raised,) = plant.alarms()
    assert (raised["machine"], raised["state"], raised["priority"], raised["priority_name"]) == ("l1/p1", "raised", 3, "high")
    assert raised["message"].startswith("current high, flow low")
    assert plant.ann.rate.count() == 1
    doc = plant.state()
    assert doc["machine"] == "l1/p1" and doc["state"] == "alarm" and doc["priority"] == 3 and "series" not in doc
    (cond,) = doc["alarms"]
    assert cond["state"] == "active_unacked" and cond["machine"] == "l1/p1" and cond["series"] is None
    assert [s["sensor"] for s in cond["sensors"][:2]] == ["current", "flow"] and cond["score"] >= cond["threshold"]

    done = operations.ack(plant.agent, None, by=operations.who("command", "ann"), note="seen", machine="l1/p1")
    assert done["machine"] == "l1/p1" and done["acknowledged"][0]["alert_id"] == raised["alert_id"]
    assert plant.state()["alarms"][0]["state"] == "active_acked" and plant.state()["alarms"][0]["acked_by"] == "ann (command)"
    assert plant.sink.records[-1][:2] == ("condition", (KEY, "model"))  # the outbox key of the machine's alarm
    with pytest.raises(operations.NothingToDo, match="machine 'l1/p1' has no unacknowledged alarm"):
        operations.ack(plant.agent, None, machine="l1/p1")

    plant.run(1400)  # restored at 1260: cleared, acknowledged before it ended, so forgotten
    assert [(a["state"], a.get("acked")) for a in plant.alarms()] == [("raised", None), ("cleared", True)]
    assert plant.ann.listing() == [] and plant.state()["alarms"] == []
    assert plant.sink.records[-1] == ("condition", (KEY, "model"), None)


def test_a_shelved_machine_is_scored_its_raise_held_back_and_announced_when_the_shelve_ends() -> None:
    plant = Plant()
    plant.run(1100)
    shelved = operations.shelve(plant.agent, None, 600, "pump overhaul", by="bob (http)", machine="l1/p1")
    assert shelved["shelved"]["machine"] == "l1/p1" and shelved["shelved"]["series"] is None
    plant.run(1230)
    assert plant.alarms() == [] and plant.ann.suppressed == 1 and plant.ann.rate.count() == 0
    doc = plant.state()
    assert doc["shelved"]["suppressed"] == 1 and doc["alarms"][0]["announced"] is False
    assert doc["alarms"][0]["priority_name"] == "medium"  # machines.alarms.priority's default
    held_id = doc["alarms"][0]["alert_id"]

    ended = operations.unshelve(plant.agent, None, by="ann", machine="l1/p1")
    assert ended["unshelved"]["announced"] == [held_id]
    (late,) = plant.alarms()
    assert late["alert_id"] == held_id and late["after_shelve"] is True and late["state"] == "raised"
    assert plant.ann.rate.count() == 1 and plant.state()["shelved"] is None
    with pytest.raises(operations.NothingToDo, match="machine 'l1/p1' is not shelved"):
        operations.unshelve(plant.agent, None, machine="l1/p1")


def test_a_machine_shelve_expires_and_its_held_alarm_is_announced_then() -> None:
    plant = Plant()
    plant.run(1100)
    plant.ann.shelve(KEY, 600, "maintenance", "ann")
    plant.run(1230)
    assert plant.alarms() == []
    plant.clock.t += 599
    assert plant.ann.expire() == 0
    plant.clock.t += 1
    assert plant.ann.expire() == 1 and KEY not in plant.ann.shelves
    (late,) = plant.alarms()
    assert (late["machine"], late["after_shelve"]) == ("l1/p1", True)
    assert plant.state()["shelved"] is None


def test_a_raise_and_its_clear_under_a_shelve_need_nobody() -> None:
    plant = Plant()
    plant.run(1100)
    plant.ann.shelve(KEY, 3600, "maintenance", "ann")
    plant.run(1400)
    assert plant.alarms() == [] and plant.ann.listing() == [] and plant.ann.suppressed == 1
    assert plant.ann.unshelve(KEY, "ann")["announced"] == []


def test_machine_records_restore_and_a_series_of_the_same_id_is_another_owner() -> None:
    plant = Plant()
    plant.run(1100)
    plant.ann.shelve("l1/p1", 600, "the series' sensor swap", "ann")  # the *series* l1/p1
    plant.run(1230)
    (raised,) = plant.alarms()  # the machine's raise is not held back by the series' shelve
    operations.ack(plant.agent, None, by="ann", machine="l1/p1")
    operations.shelve(plant.agent, None, 300, "overhaul", by="bob", machine="l1/p1")

    # What the outbox tables would hold (the last record per key), read by a fresh agent's annunciator.
    tables: dict[tuple[str, tuple[str, ...]], str | None] = {}
    for table, key, doc in plant.sink.records:
        tables[(table, key)] = doc
    conditions = [(k[0], k[1], d) for (t, k), d in tables.items() if t == "condition" and d is not None]
    shelves = [(k[0], d) for (t, k), d in tables.items() if t == "shelve" and d is not None]
    again = Annunciator(plant.cfg, Sink(), lambda sid: None, Clock())
    active = again.restore(conditions, shelves)
    assert [(key, name) for key, name, _ in active] == [(KEY, "model")]
    (cond,) = again.listing()
    assert cond.view()["machine"] == "l1/p1" and cond.state == "active_acked" and cond.raised["alert_id"] == raised["alert_id"]
    assert sorted(again.shelves) == sorted(["l1/p1", KEY])
    assert again.shelves[KEY].machine == "l1/p1" and again.shelves["l1/p1"].machine is None

    # A series' alarm goes on its own topic and keys, as before.
    plant.ann.unshelve("l1/p1", "ann")
    plant.ann.on_event(AlarmEvent("s-1", "l1/p1", "raised", T0, 30.0, 5.0, 3.0, "statistical", 1, None, seq=1, priority=4))
    assert plant.sink.published[-2][0] == "edge/gw-t/alerts/l1/p1" and plant.sink.published[-2][1]["series"] == "l1/p1"
    assert {k for k in plant.ann.conditions} == {"l1/p1", KEY}


def test_requests_name_one_known_machine() -> None:
    plant = Plant()
    plant.run(10)
    with pytest.raises(operations.OperationError, match="not both"):
        operations.ack(plant.agent, "l1/p1", machine="l1/p1")
    with pytest.raises(UnknownMachine, match="no machine 'l9/nope'"):
        operations.shelve(plant.agent, None, 60, "x", machine="l9/nope")
    with pytest.raises(operations.OperationError, match="condition must be one of model"):
        operations.ack(plant.agent, None, condition="hi", machine="l1/p1")
    with pytest.raises(operations.OperationError, match="machine must be a machine id"):
        operations.unshelve(plant.agent, None, machine="")
    no_machines = SimpleNamespace(annunciator=plant.ann, cfg=plant.cfg, machines=None)
    with pytest.raises(operations.NoMachines):
        operations.shelve(no_machines, None, 60, "x", machine="l1/p1")


def test_a_rate_alarm_is_named_by_its_kind_on_the_page_and_the_sparkplug_device() -> None:
    """A sensor alarmed by its rate channel reads "rising fast", not "high", wherever the
    alarm's sensors are named (the page's alarm row and the Sparkplug device's Top Sensors),
    as in the alarm message; a contribution without a kind still reads high/low by its sign."""
    from edge_agent.http.page_parts import machine_alarm_row
    from edge_agent.machine_detectors import Contribution
    from edge_agent.sparkplug.machine_devices import top_sensors

    view = {"machine": "l1/p1", "score": 2.0, "threshold": 1.0, "acked": False, "active": True,
            "state": "active_unacked", "priority": 2, "priority_name": "medium", "raised_ts": T0,
            "sensors": [{"sensor": "flow", "z": 6.0, "kind": "rising fast"}, {"sensor": "current", "z": -3.0}]}
    assert "flow rising fast, current low" in machine_alarm_row(view, False, "")
    ramp = Contribution("flow", 1.0, 0.5, 0.5, 6.0, 0.7, "rising fast")
    level = Contribution("current", 9.0, 10.0, -1.0, -3.0, 0.3)
    assert top_sensors([ramp, level]) == "flow rising fast, current low"
