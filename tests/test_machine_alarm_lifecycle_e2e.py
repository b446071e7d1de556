"""A machine's alarm through alarm management, end to end (issue 14 point 4 / issue 16 for
machines): a real mosquitto, the agent as a process with its HTTP port, a PLC-side paho client
publishing the simulated pump (one sensor per topic), a SCADA-side client reading the machine
alarm topic and the retained machine state topic, and an operator acting by signed command
and by authenticated HTTP.

The pump's relation breaks twice (rows 1200 and 1400, each for 60 s). Alarm #1 is raised and
published, acknowledged by command and the machine shelved by HTTP; the agent restarts while
#1 is held, and comes back with the acknowledgement and the shelve. #1 clears (published:
SCADA had it); #2 is raised under the shelve and held back; unshelved by command, #2 is
published then with ``after_shelve``, acknowledged by HTTP, and cleared."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import Mosquitto, Publisher, Subscriber, wait_for
from test_http_live import TOKEN, HttpAgent

from edge_agent.command_auth import sign
from edge_agent.pump_sim import SENSORS, Pump

KEY = b"0123456789abcdef0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BREAKS = (1200, 1400)  # pump_sim: ramped in over 10 s, restored 60 s later
N = 1600
T0 = time.time() - 2 * N  # one row a second, all in the recent past
STATE = "edge/gw-test/machine_state/l1/p1"


def pump_rows(seed: int = 4) -> list[list[float]]:
    rng = random.Random(seed)
    pump = Pump.random("p1", rng)
    rows = []
    for t in range(N):
        fire = t in BREAKS
        values, _ = pump.step(float(t), 1.0, rng, 1.0 if fire else 0.0, fire)
        rows.append([values[s] for s in SENSORS])
    return rows


def publish(pub: Publisher, rows: list[list[float]], start: int, stop: int) -> None:
    infos = [pub.reading(f"plant/l1/p1/{s}", row[j], T0 + t + 0.01 * j)
             for t, row in zip(range(start, stop), rows[start:stop], strict=True) for j, s in enumerate(SENSORS)]
    for info in infos:
        info.wait_for_publish(60)


def fit_then_break(agent: Any, pub: Publisher, rows: list[list[float]], alarms: Subscriber, what: str) -> None:
    """Connect, publish until the machine's first model is fitted, then past the first break
    until SCADA holds a machine alarm (``what`` names it in a timeout)."""
    agent.wait_connected()
    publish(pub, rows, 0, 600)
    agent.wait_log("machine 'l1/p1': model v1 (baseline_t2) active after initial fit", 90)
    publish(pub, rows, 600, BREAKS[0] + 30)
    wait_for(lambda: alarms.json(), 60, what)


def command(pub: Publisher, answers: Subscriber, name: str, args: dict[str, Any]) -> dict[str, Any]:
    rid = f"{name}-{time.monotonic_ns()}"
    pub.publish(f"edge/gw-test/cmd/{name}", sign(KEY, name, args, request_id=rid)).wait_for_publish(10)
    return wait_for(lambda: next((d for d in answers.json() if d.get("request_id") == rid and d["status"] != "accepted"), None),
                    20, f"an answer to {name}")


def state(states: Subscriber) -> dict[str, Any]:
    docs = states.json(STATE)
    return docs[-1] if docs else {}


def metric(agent: HttpAgent, line: str) -> float:
    for row in agent.get("/metrics").text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    raise AssertionError(f"{line} not in /metrics")


@pytest.mark.timeout(240)
def test_ack_shelve_restart_unshelve_of_a_machine_alarm(tmp_path: Path, mosquitto: Mosquitto) -> None:
    (tmp_path / "cmd.key").write_bytes(KEY + b"\n")
    agent = HttpAgent(tmp_path, mosquitto, **{
        "commands.key_file": str(tmp_path / "cmd.key"),
        "detector.min_train_samples": 100,
        "subscriptions": [{"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}", "machine": "{line}/{machine}"}],
        "ingest.max_past_age_s": 1e6,
        "machines.alarms.state_topic": "edge/{gateway_id}/machine_state/{machine}",
        "machines.alarms.priority": "high",
    })
    rows = pump_rows()
    alarms = Subscriber(mosquitto, "edge/gw-test/machine_alerts/#")
    states = Subscriber(mosquitto, "edge/gw-test/machine_state/#")
    answers = Subscriber(mosquitto, "edge/gw-test/cmd/+/response")
    pub = Publisher(mosquitto)
    agent.start()
    try:
        fit_then_break(agent, pub, rows, alarms, "machine alarm #1")
        (first,) = alarms.json()
        assert (first["machine"], first["state"], first["seq"], first["priority"], first["priority_name"]) == ("l1/p1", "raised", 1, 3, "high")

        # Acknowledged by signed command: SCADA's retained state says so.
        done = command(pub, answers, "ack", {"machine": "l1/p1", "by": "ann", "note": "seen"})
        assert done["status"] == "done", done
        assert done["result"]["machine"] == "l1/p1" and done["result"]["acknowledged"][0]["alert_id"] == first["alert_id"]
        wait_for(lambda: (state(states).get("alarms") or [{}])[0].get("state") == "active_acked", 10, "the acked state")
        doc = state(states)
        assert doc["machine"] == "l1/p1" and doc["state"] == "alarm" and doc["alarms"][0]["acked_by"] == "ann (command)"
        both = command(pub, answers, "ack", {"machine": "l1/p1", "series": "p1/current"})
        assert both["status"] == "failed" and "not both" in both["error"]

        # Shelved by HTTP: the token is required, the machine must exist.
        assert agent.post("/machine_shelve/l1/p1", json={"duration_s": 900, "reason": "overhaul"}).status_code == 401
        assert agent.post("/machine_shelve/l9/nope", json={"duration_s": 900, "reason": "x"}, headers=AUTH).status_code == 404
        r = agent.post("/machine_shelve/l1/p1", json={"duration_s": 900, "reason": "pump overhaul", "by": "bob"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["shelved"]["machine"] == "l1/p1" and r.json()["shelved"]["by"] == "bob (http)"
        wait_for(lambda: (state(states).get("shelved") or {}).get("reason") == "pump overhaul", 10, "the shelve in the state topic")

        # `status` without arguments lists the machine beside the series.
        st = command(pub, answers, "status", {})
        (m,) = st["result"]["machines"]
        assert (m["machine"], m["state"], m["alarm_state"], m["shelved"]) == ("l1/p1", "alarm", "active_acked", True)
        assert m["top_sensors"][:2] == ["current high", "flow low"] and {s["series"] for s in st["result"]["series"]} == {f"p1/{s}" for s in SENSORS}

        # Restart while #1 is held: its acknowledgement and the shelve come back.
        assert agent.stop() == 0
        agent.start()
        agent.wait_connected()
        agent.wait_log("1 machine alarm(s) open")
        listing = agent.get("/alarms").json()
        (cond,) = [a for a in listing["alarms"] if a["machine"] == "l1/p1"]
        assert (cond["state"], cond["alert_id"], cond["acked_by"], cond["series"]) == ("active_acked", first["alert_id"], "ann (command)", None)
        assert [(s["machine"], s["reason"]) for s in listing["shelved"]] == [("l1/p1", "pump overhaul")]
        assert metric(agent, 'edge_agent_machine_shelved{machine="l1/p1"}') == 1.0
        assert metric(agent, 'edge_agent_machine_alarm_acked{machine="l1/p1"}') == 1.0
        assert metric(agent, "edge_agent_machines_shelved") == 1.0 and metric(agent, "edge_agent_alarm_series_shelved") == 0.0
        assert metric(agent, 'edge_agent_alarm_conditions{priority="high",state="active_acked"}') == 1.0
        page = agent.get("/?refresh=0").text
        row = re.search(r'<tr class="alarm-row machine-alarm active_acked acked" data-machine="l1/p1"[^>]*>(.*?)</tr>', page)
        assert row is not None and "current high, flow low" in row[1] and "shelved" in row[1] and "Unshelve" in row[1], page[:3000]

        # #1 clears (SCADA had it: published); #2 is raised under the shelve: held back.
        publish(pub, rows, BREAKS[0] + 30, BREAKS[1] + 30)
        wait_for(lambda: any(a["seq"] == 2 for a in state(states).get("alarms", [])), 60, "alarm #2 in the state topic")
        time.sleep(0.5)
        assert [(a["state"], a["seq"], a.get("acked")) for a in alarms.json()] == [("raised", 1, None), ("cleared", 1, True)]
        doc = state(states)
        (second,) = doc["alarms"]
        assert (second["state"], second["announced"], doc["shelved"]["suppressed"]) == ("active_unacked", False, 1)
        assert metric(agent, "edge_agent_alarms_suppressed_total") == 1.0

        # Unshelved by signed command: #2, still active, is published now.
        done = command(pub, answers, "unshelve", {"machine": "l1/p1", "by": "bob"})
        assert done["status"] == "done" and done["result"]["unshelved"]["announced"] == [second["alert_id"]], done
        wait_for(lambda: len(alarms.json()) == 3, 10, "alarm #2 after the shelve")
        late = alarms.json()[2]
        assert (late["alert_id"], late["state"], late["seq"], late["after_shelve"]) == (second["alert_id"], "raised", 2, True)
        assert "current high" in late["message"] and "flow low" in late["message"], late["message"]

        # Acknowledged by HTTP, then cleared.
        assert agent.post("/machine_ack/l1/p1", json={}).status_code == 401
        r = agent.post("/machine_ack/l1/p1", json={"by": "cy"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["acknowledged"][0]["alert_id"] == second["alert_id"]
        assert agent.post("/machine_ack/l1/p1", json={}, headers=AUTH).status_code == 409
        assert agent.post("/machine_unshelve/l1/p1", json={}, headers=AUTH).status_code == 409
        publish(pub, rows, BREAKS[1] + 30, N)
        wait_for(lambda: len(alarms.json()) == 4, 60, "alarm #2's clear")
        assert (alarms.json()[3]["state"], alarms.json()[3]["seq"], alarms.json()[3]["acked"]) == ("cleared", 2, True)
        wait_for(lambda: state(states).get("alarms") == [] and state(states).get("state") == "normal", 10, "nothing left to see")
        assert not [a for a in agent.get("/alarms").json()["alarms"] if a["machine"] == "l1/p1"]
    finally:
        pub.close()
        for sub in (alarms, states, answers):
            sub.close()
        assert agent.close() == 0, agent.log()[-3000:]


@pytest.mark.timeout(180)
def test_a_machine_alarm_open_when_machines_leave_the_config_is_cleared_at_start(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """As an engineering limit removed from the config: nothing could ever end the alarm, so
    the next start clears it (SCADA and the operators' list would keep it for ever)."""
    plain = [{"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}"}]
    common = {"detector.min_train_samples": 100, "ingest.max_past_age_s": 1e6}
    agent = HttpAgent(tmp_path, mosquitto, **common, subscriptions=[{**plain[0], "machine": "{line}/{machine}"}])
    rows = pump_rows()
    alarms = Subscriber(mosquitto, "edge/gw-test/machine_alerts/#")
    pub = Publisher(mosquitto)
    agent.start()
    try:
        fit_then_break(agent, pub, rows, alarms, "the machine alarm")
        (raised,) = alarms.json()
        assert agent.close() == 0

        agent = HttpAgent(tmp_path, mosquitto, name="agent-without-machines", **common, subscriptions=plain)
        agent.start()
        agent.wait_connected()
        wait_for(lambda: len(alarms.json()) == 2, 20, "the clear")
        cleared = alarms.json()[1]
        assert (cleared["state"], cleared["raised_alert_id"], cleared["seq"]) == ("cleared", raised["alert_id"], 1)
        assert "no longer configured" in cleared["message"] and cleared["acked"] is False
        assert "its alarm was open at the last stop and no subscription feeds machines now" in agent.log()
        # Ended unacknowledged: listed until an operator acknowledges it, as any alarm.
        (cond,) = [a for a in agent.get("/alarms").json()["alarms"] if a["machine"] is not None]
        assert (cond["machine"], cond["state"]) == ("l1/p1", "cleared_unacked")
        assert agent.close() == 0
        agent.start()  # the next start has nothing left to end
        agent.wait_connected()
        time.sleep(0.5)
        assert len(alarms.json()) == 2
    finally:
        pub.close()
        alarms.close()
        agent.close()
