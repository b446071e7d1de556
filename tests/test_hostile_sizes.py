"""Hostile-input campaign, attack class *sizes*: what the agent sends, against MQTT's limits
and the broker's (issue 15, finding 1).

A message the agent cannot send must never stay at the head of the outbox: sizes and topics
are checked before anything is queued, answers are cut to fit the broker's advertised
Maximum Packet Size, and a row that still cannot be delivered (one queued before these
checks existed, or a broker limit nobody advertised) is quarantined after
``outbox.max_attempts`` and the queue moves on. Each case ends with the campaign's
invariants: the agent still scores, and its alarm reaches SCADA.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from helpers import Subscriber, wait_for

from edge_agent.outbox_tables import create as _create


def quarantined(c) -> list[tuple[str, str]]:
    db = sqlite3.connect(c.agent.state_dir / "outbox.sqlite")
    try:
        return [(t[:60], r) for t, r in db.execute("SELECT topic, reason FROM quarantine")]
    finally:
        db.close()


def connects(c) -> int:
    return c.agent.log().count("connected to ")


@pytest.mark.timeout(120)
def test_an_undeliverable_row_left_in_the_outbox_is_quarantined_and_alarms_flow(make_campaign) -> None:
    """A row queued before the pre-queue checks existed (here: a topic longer than MQTT
    allows, as the old refusal of a 65,535-byte command topic made) used to wedge the
    outbox head across restarts. It is quarantined, reported, and alarms flow behind it."""
    c = make_campaign(start_agent=False, http=True)
    c.agent.state_dir.mkdir(parents=True)
    db = sqlite3.connect(c.agent.state_dir / "outbox.sqlite")
    _create(db)
    db.execute(
        "INSERT INTO outbox(topic, payload, qos, retain, created, expires, props) VALUES (?,?,?,?,?,?,?)",
        (f"edge/{c.gateway_id}/cmd/" + "A" * 65_530 + "/response", b'{"status":"refused"}', 1, 0, time.time(), None, None),
    )
    db.commit()
    db.close()
    c.start()
    c.assert_invariants(timeout=2.0)
    assert [r for _, r in quarantined(c)] == ["topic_too_long"]
    status, health = c.get("/healthcheck")
    assert status == 200 and health["status"] == "degraded"
    assert any("quarantined" in p for p in health["problems"]), health["problems"]
    assert health["outbox"]["quarantined"] == {"topic_too_long": 1}
    _, metrics = c.get("/metrics")
    assert b'edge_agent_outbox_quarantined_total{reason="topic_too_long"} 1.0' in metrics
    assert c.get("/readyz")[0] == 200  # the queue moves on: a warning, not an outage
    status, alive = c.get("/healthz")
    assert status == 200 and any("quarantined" in p for p in alive["problems"])


@pytest.mark.timeout(120)
def test_a_status_answer_larger_than_the_brokers_packet_limit_is_cut_to_fit(make_campaign) -> None:
    """With mosquitto's ``max_packet_size 16384`` a signed ``status`` of a few hundred series
    was larger than the broker takes: the agent ignored the CONNACK's Maximum Packet Size,
    was disconnected, reconnected and resent it ~5 times a second. Now the answer is cut to
    fit, says so, and the rest can be paged with ``offset``."""
    c = make_campaign(broker_extra="max_packet_size 16384\n", signed_commands=True)
    for i in range(300):
        c.plc.reading(f"plant/bulk/m{i:03d}/temp", 1.0, c.next_ts(f"plant/bulk/m{i:03d}/temp"))
    wait_for(lambda: "c0/probe" in c.agent.log(), 5, "agent running")
    replies = Subscriber(c.broker, f"edge/{c.gateway_id}/cmd/status/response")
    try:
        before = connects(c)
        time.sleep(1.0)  # the readings above are scored
        c.plc.publish(f"edge/{c.gateway_id}/cmd/status", c.sign("status", {}, request_id="big")).wait_for_publish(10)
        done = wait_for(lambda: [r for r in replies.json() if r["status"] == "done"], 10, "the status answer")[0]
        sizes = [len(p) for _, p, _ in replies.messages]
        assert max(sizes) < 16384
        result = done["result"]
        assert result["truncated"] is True and result["total"] == 301
        first = len(result["series"])
        assert 20 < first < 301 and result["next_offset"] == first
        c.plc.publish(f"edge/{c.gateway_id}/cmd/status", c.sign("status", {"offset": first}, request_id="page2")).wait_for_publish(10)
        page2 = wait_for(lambda: [r for r in replies.json() if r["request_id"] == "page2" and r["status"] == "done"], 10, "page 2")[0]
        assert page2["result"]["offset"] == first
        assert {s["series"] for s in page2["result"]["series"]}.isdisjoint({s["series"] for s in result["series"]})
        c.assert_invariants(timeout=3.0)
        assert connects(c) == before, "the agent was disconnected"
        assert quarantined(c) == []
    finally:
        replies.close()


@pytest.mark.timeout(120)
def test_a_message_an_mqtt311_broker_drops_the_connection_for_is_quarantined(make_campaign) -> None:
    """MQTT 3.1.1 has no Maximum Packet Size in CONNACK: the agent cannot know the limit, the
    broker drops the connection on the oversized answer. After ``outbox.max_attempts`` such
    losses the answer is quarantined and the alarms queued behind it are delivered."""
    c = make_campaign(broker_extra="max_packet_size 16384\n", signed_commands=True, **{"mqtt.protocol": "3.1.1", "outbox.max_attempts": 3})
    for i in range(300):
        c.plc.reading(f"plant/bulk/m{i:03d}/temp", 1.0, c.next_ts(f"plant/bulk/m{i:03d}/temp"))
    time.sleep(1.0)
    c.plc.publish(f"edge/{c.gateway_id}/cmd/status", c.sign("status", {}, request_id="big")).wait_for_publish(10)
    wait_for(lambda: quarantined(c), 30, f"the answer quarantined\n{c.agent.log()[-3000:]}")
    assert [r for _, r in quarantined(c)] == ["broker_disconnect"]
    c.assert_invariants(timeout=10.0)


@pytest.mark.timeout(120)
def test_mqtt_max_packet_bytes_bounds_answers_for_a_broker_that_does_not_advertise(make_campaign) -> None:
    """``mqtt.max_packet_bytes`` tells the agent a limit a 3.1.1 broker enforces silently:
    the status answer is cut to fit it, nothing is quarantined, the link stays up."""
    c = make_campaign(broker_extra="max_packet_size 16384\n", signed_commands=True, **{"mqtt.protocol": "3.1.1", "mqtt.max_packet_bytes": 16384})
    for i in range(300):
        c.plc.reading(f"plant/bulk/m{i:03d}/temp", 1.0, c.next_ts(f"plant/bulk/m{i:03d}/temp"))
    replies = Subscriber(c.broker, f"edge/{c.gateway_id}/cmd/status/response")
    try:
        time.sleep(1.0)
        before = connects(c)
        c.plc.publish(f"edge/{c.gateway_id}/cmd/status", c.sign("status", {}, request_id="big")).wait_for_publish(10)
        done = wait_for(lambda: [r for r in replies.json() if r["status"] == "done"], 10, "the status answer")[0]
        assert done["result"]["truncated"] is True
        c.assert_invariants(timeout=3.0)
        assert connects(c) == before and quarantined(c) == []
    finally:
        replies.close()


