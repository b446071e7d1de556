"""The three-rule config of issue 16 through a real mosquitto and a real agent process: each
rule's detector, priority, unit and limits show in the alarms SCADA receives."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from helpers import AgentProcess, Mosquitto, Publisher, Subscriber, agent_config, wait_for

RULES = [
    {"name": "site defaults", "match": {"series": "*"}, "priority": "low"},
    {"name": "temperatures", "match": {"sensor": "temp*"}, "detector": "statistical", "params": {"k": 4.0},
     "min_train_samples": 60, "unit": "degC"},
    {"name": "vibrations", "match": {"sensor": ["vib*", "accel*"]}, "priority": "medium", "min_train_samples": 120,
     "unit": "mm/s"},
    {"name": "discharge pressure", "match": {"series": "m7/pressure"}, "priority": "critical", "unit": "bar",
     "description": "pump 7 discharge pressure",
     "limits": {"hihi": 9.5, "hi": 8.0, "lo": 1.0, "lolo": 0.5, "deadband": 0.2}},
]


@pytest.mark.timeout(120)
def test_three_rules_show_in_the_alarms_scada_receives(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = agent_config(tmp_path, mosquitto, rules=RULES, **{"detector.name": "robust", "detector.min_train_samples": 300,
                                                           "alarms.state_topic": "edge/{gateway_id}/state/{series}"})
    agent = AgentProcess(tmp_path, cfg).start()
    scada = Subscriber(mosquitto, "edge/gw-test/alerts/#")
    state = Subscriber(mosquitto, "edge/gw-test/state/#")
    pub = Publisher(mosquitto)
    try:
        agent.wait_connected()
        rng = np.random.default_rng(7)
        t0 = time.time() - 3600
        rows = []
        # Pressure: no model will exist (300 readings to learn), yet its datasheet limits work.
        for k, v in enumerate([5.0, 5.1, 8.3, 9.7, 9.6, 9.2, 7.5, 5.0]):
            rows.append(("plant/line1/m7/pressure", v, t0 + k))
        for k in range(120):
            rows.append(("plant/line1/m1/temp", 20.0 + float(rng.uniform(-1, 1)), t0 + k))
            rows.append(("plant/line1/m1/vibration", 3.0 + float(rng.uniform(-0.2, 0.2)), t0 + k))
        for info in [pub.reading(t, v, ts) for t, v, ts in rows]:
            info.wait_for_publish(30)
        wait_for(lambda: agent.models_active() >= 2, 30, "models for m1/temp and m1/vibration")
        pub.reading("plant/line1/m1/temp", 60.0, t0 + 200).wait_for_publish(10)
        pub.reading("plant/line1/m1/vibration", 30.0, t0 + 200).wait_for_publish(10)
        wait_for(lambda: len([a for a in scada.json() if a["state"] == "raised"]) >= 4, 30, "four raises")
        time.sleep(0.5)
        alarms = scada.json()
        raised = {(a["series"], a.get("limit") or "model"): a for a in alarms if a["state"] == "raised"}
        assert set(raised) == {("m7/pressure", "hi"), ("m7/pressure", "hihi"), ("m1/temp", "model"), ("m1/vibration", "model")}

        temp = raised[("m1/temp", "model")]
        assert temp["source"] == "model" and temp["model"]["detector"] == "statistical" and temp["threshold"] == 4.0
        assert (temp["priority"], temp["priority_name"], temp["unit"]) == (1, "low", "degC")

        vib = raised[("m1/vibration", "model")]
        assert vib["model"]["detector"] == "robust" and (vib["priority"], vib["unit"]) == (2, "mm/s")

        hi, hihi = raised[("m7/pressure", "hi")], raised[("m7/pressure", "hihi")]
        assert (hi["source"], hi["setpoint"], hi["priority"], hi["priority_name"]) == ("limit", 8.0, 4, "critical")
        assert (hihi["setpoint"], hihi["value"], hihi["unit"]) == (9.5, 9.7, "bar")
        assert hi["description"] == "pump 7 discharge pressure" and hi["expected"] == {"low": 1.0, "high": 8.0}
        # HiHi cleared at 9.2 (< 9.5 - 0.2), Hi at 7.5 (< 8.0 - 0.2), each referring to its raise.
        ends = [(a["limit"], a["raised_alert_id"]) for a in alarms if a["series"] == "m7/pressure" and a["state"] == "cleared"]
        assert ends == [("hihi", hihi["alert_id"]), ("hi", hi["alert_id"])]

        # The retained state topic: the pressure's two ended, unacknowledged alarms stay listed.
        def pressure_state() -> dict | None:
            docs = state.json("edge/gw-test/state/m7/pressure")
            return docs[-1] if docs else None

        wait_for(lambda: pressure_state() is not None and len(pressure_state()["alarms"]) == 2, 10, "pressure state")
        doc = pressure_state()
        assert doc["priority"] == 4 and doc["unit"] == "bar"
        assert {(c["condition"], c["state"]) for c in doc["alarms"]} == {("hi", "cleared_unacked"), ("hihi", "cleared_unacked")}
    finally:
        pub.close()
        scada.close()
        state.close()
        assert agent.stop() == 0


@pytest.mark.timeout(120)
def test_limit_alarms_survive_a_restart_and_end_when_the_limit_is_removed(tmp_path: Path, mosquitto: Mosquitto) -> None:
    rules = [{"match": {"series": "m7/pressure"}, "priority": "critical", "limits": {"hi": 8.0, "deadband": 0.2}}]
    agent = AgentProcess(tmp_path, agent_config(tmp_path, mosquitto, rules=rules))
    scada = Subscriber(mosquitto, "edge/gw-test/alerts/#")
    pub = Publisher(mosquitto)
    t0 = time.time() - 100

    def ends() -> list[dict]:
        return [a for a in scada.json() if a["state"] == "cleared"]

    try:
        agent.start().wait_connected()
        pub.reading("plant/l1/m7/pressure", 8.5, t0).wait_for_publish(10)
        wait_for(lambda: scada.json(), 10, "the Hi alarm")
        first = scada.json()[0]
        assert agent.stop() == 0
        # Restarted: the Hi alarm is still open, and clears once the value is back inside.
        agent.start().wait_connected()
        pub.reading("plant/l1/m7/pressure", 7.0, t0 + 1).wait_for_publish(10)
        wait_for(ends, 10, "the Hi alarm cleared after the restart")
        assert (ends()[0]["raised_alert_id"], ends()[0]["seq"], ends()[0]["limit"]) == (first["alert_id"], first["seq"], "hi")
        pub.reading("plant/l1/m7/pressure", 8.6, t0 + 2).wait_for_publish(10)
        wait_for(lambda: len(scada.json()) == 3, 10, "a second Hi alarm")
        second = scada.json()[2]
        assert second["state"] == "raised" and second["seq"] == first["seq"] + 1
        assert agent.stop() == 0
        # The limit removed from the config: its open alarm ends at start-up.
        agent = AgentProcess(tmp_path, agent_config(tmp_path, mosquitto, rules=[{"match": {"series": "m7/pressure"}, "priority": "critical"}]),
                             name="agent-no-limits")
        agent.start().wait_connected()
        wait_for(lambda: len(ends()) == 2, 10, "the second Hi alarm ended")
        end = ends()[1]
        assert end["raised_alert_id"] == second["alert_id"] and end["limit"] == "hi" and "no longer configured" in end["message"]
    finally:
        pub.close()
        scada.close()
        assert agent.stop() == 0
