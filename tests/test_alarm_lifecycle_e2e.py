"""Ack, shelve and unshelve through a real broker and a real agent process: by signed command
and by HTTP, shown in the retained state topic, GET /alarms and /metrics, and kept across an
agent restart (annunciator.py, operations.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import Mosquitto, Publisher, Subscriber, wait_for
from test_http_live import TOKEN, HttpAgent, topic, train

from edge_agent.command_auth import sign

KEY = b"0123456789abcdef0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RULES = [{"match": {"machine": "m1"}, "priority": "high", "unit": "degC"},
         {"match": {"machine": "m2"}, "priority": "low"}]


def command(pub: Publisher, responses: Subscriber, name: str, args: dict[str, Any]) -> dict[str, Any]:
    rid = f"{name}-{time.monotonic_ns()}"
    pub.publish(f"edge/gw-test/cmd/{name}", sign(KEY, name, args, request_id=rid)).wait_for_publish(10)
    return wait_for(lambda: next((d for d in responses.json() if d.get("request_id") == rid and d["status"] != "accepted"), None),
                    10, f"an answer to {name}")


def metric(agent: HttpAgent, line: str) -> float:
    for row in agent.get("/metrics").text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    raise AssertionError(f"{line} not in /metrics")


def last_state(sub: Subscriber, sid: str) -> dict[str, Any] | None:
    docs = sub.json(f"edge/gw-test/state/{sid}")
    return docs[-1] if docs else None


@pytest.mark.timeout(120)
def test_ack_shelve_unshelve_by_command_and_http_survive_a_restart(tmp_path: Path, mosquitto: Mosquitto) -> None:
    (tmp_path / "cmd.key").write_bytes(KEY + b"\n")
    agent = HttpAgent(tmp_path, mosquitto, rules=RULES, **{"commands.key_file": str(tmp_path / "cmd.key"),
                                                           "alarms.state_topic": "edge/{gateway_id}/state/{series}"})
    agent.start()
    alerts = Subscriber(mosquitto, "edge/gw-test/alerts/#")
    states = Subscriber(mosquitto, "edge/gw-test/state/#")
    responses = Subscriber(mosquitto, "edge/gw-test/cmd/+/response")
    pub = Publisher(mosquitto)
    try:
        agent.wait_connected()
        train(agent, pub, ["m1/temp", "m2/temp"])
        pub.reading(topic("m1/temp"), 1000.0, time.time()).wait_for_publish(10)
        wait_for(lambda: alerts.json(), 10, "m1's alarm")
        m1_alarm = alerts.json()[0]
        assert (m1_alarm["priority"], m1_alarm["priority_name"], m1_alarm["unit"]) == (3, "high", "degC")

        # Ack by signed command: the state topic and /metrics say active_acked.
        done = command(pub, responses, "ack", {"series": "m1/temp", "note": "seen", "by": "ann"})
        assert done["status"] == "done", done
        assert done["result"]["acknowledged"][0]["alert_id"] == m1_alarm["alert_id"]
        wait_for(lambda: (d := last_state(states, "m1/temp")) and d["alarms"][0]["state"] == "active_acked", 10, "acked state")
        assert last_state(states, "m1/temp")["alarms"][0]["acked_by"] == "ann (command)"
        assert metric(agent, 'edge_agent_alarm_conditions{priority="high",state="active_acked"}') == 1.0
        again = command(pub, responses, "ack", {"series": "m1/temp"})
        assert again["status"] == "failed" and "no unacknowledged alarm" in again["error"]

        # Shelve by HTTP: the token is required; a raise while shelved is not published.
        assert agent.post("/shelve/m2/temp", json={"duration_s": 600, "reason": "maintenance"}).status_code == 401
        assert agent.post("/shelve/m2/temp", json={"duration_s": 1e9, "reason": "x"}, headers=AUTH).status_code == 400
        r = agent.post("/shelve/m2/temp", json={"duration_s": 600, "reason": "pump overhaul", "by": "bob"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["shelved"]["by"] == "bob (http)"
        pub.reading(topic("m2/temp"), 1000.0, time.time()).wait_for_publish(10)
        wait_for(lambda: (d := last_state(states, "m2/temp")) and d["alarms"], 10, "m2's suppressed alarm in its state")
        doc = last_state(states, "m2/temp")
        assert doc["shelved"]["reason"] == "pump overhaul" and doc["shelved"]["suppressed"] == 1
        assert doc["alarms"][0]["state"] == "active_unacked" and doc["alarms"][0]["announced"] is False
        suppressed_id = doc["alarms"][0]["alert_id"]
        time.sleep(0.5)
        assert [a["series"] for a in alerts.json()] == ["m1/temp"]  # nothing published for m2
        assert metric(agent, "edge_agent_alarm_series_shelved") == 1.0
        assert metric(agent, "edge_agent_alarms_suppressed_total") == 1.0

        # Restart: acknowledgement and shelve come back as they were.
        assert agent.stop() == 0
        agent.start()
        agent.wait_connected()
        listing = agent.get("/alarms").json()
        by_series = {a["series"]: a for a in listing["alarms"]}
        assert by_series["m1/temp"]["state"] == "active_acked" and by_series["m1/temp"]["acked_by"] == "ann (command)"
        assert by_series["m2/temp"]["state"] == "active_unacked" and by_series["m2/temp"]["alert_id"] == suppressed_id
        assert [s["series"] for s in listing["shelved"]] == ["m2/temp"]
        assert listing["alarms"][0]["series"] == "m1/temp"  # active first, higher priority first

        # Unshelve by signed command: the alarm raised under the shelve, still active, is published now.
        done = command(pub, responses, "unshelve", {"series": "m2/temp"})
        assert done["status"] == "done" and done["result"]["unshelved"]["announced"] == [suppressed_id]
        wait_for(lambda: any(a["series"] == "m2/temp" for a in alerts.json()), 10, "m2's alarm after the shelve")
        late = next(a for a in alerts.json() if a["series"] == "m2/temp")
        assert late["alert_id"] == suppressed_id and late["after_shelve"] is True and late["priority"] == 1

        # Ack by HTTP, shelve by command, unshelve by HTTP.
        assert agent.post("/ack/m2/temp", json={}).status_code == 401
        r = agent.post("/ack/m2/temp", json={"note": "known"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["acknowledged"][0]["alert_id"] == suppressed_id
        assert agent.post("/ack/m2/temp", json={}, headers=AUTH).status_code == 409
        done = command(pub, responses, "shelve", {"series": "m1/temp", "duration_s": 60, "reason": "sensor swap"})
        assert done["status"] == "done" and done["result"]["shelved"]["reason"] == "sensor swap"
        r = agent.post("/unshelve/m1/temp", json={}, headers=AUTH)
        assert r.status_code == 200 and r.json()["unshelved"]["announced"] == []  # its alarm was published already
        assert agent.post("/unshelve/m1/temp", json={}, headers=AUTH).status_code == 409
        assert metric(agent, "edge_agent_alarm_series_shelved") == 0.0
        assert metric(agent, "edge_agent_alarm_rate_10min") >= 1.0 and metric(agent, "edge_agent_alarm_flood") == 0.0
        assert json.loads(json.dumps(listing))  # plain JSON
    finally:
        pub.close()
        for sub in (alerts, states, responses):
            sub.close()
        assert agent.close() == 0, agent.log()[-3000:]
