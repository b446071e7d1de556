"""MQTT's limits as the agent checks them before queueing (``mqtt_limits``), against gmqtt's
own packet encoder as an independent oracle, and command answers cut to fit a budget."""

from __future__ import annotations

import json

import pytest
from gmqtt import Message
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.mqtt.package import PublishPacket

from edge_agent.commands import fit_answer
from edge_agent.mqtt_limits import (
    MAX_PACKET_BYTES,
    MAX_TOPIC_BYTES,
    Unsendable,
    check_publish,
    payload_budget,
    properties_bytes,
    publish_packet_bytes,
    topic_problem,
)


class _Ids:
    def next_id(self) -> int:
        return 1


class _Proto:
    def __init__(self, version: int) -> None:
        self.proto_ver = version
        self.id_generator = _Ids()


@pytest.mark.parametrize("topic", ["a", "edge/gw/alerts/m1/temp", "é/ü/" + "x" * 300, "t" * 20_000])
@pytest.mark.parametrize("payload", [0, 1, 127, 128, 16_383, 16_384, 70_000])
@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("props", [{}, {"message_expiry_interval": 60}, {"message_expiry_interval": 60, "correlation_data": b"c" * 300}])
def test_packet_size_matches_gmqtts_encoder(topic: str, payload: int, qos: int, props: dict) -> None:
    _, packet = PublishPacket.build_package(Message(topic, b"p" * payload, qos=qos, **props), _Proto(MQTTv50))
    expect = publish_packet_bytes(len(topic.encode()), payload, qos, properties_bytes("message_expiry_interval" in props, props.get("correlation_data")))
    assert expect == len(packet)
    # MQTT 3.1.1 sends no property block: the estimate is an upper bound there.
    _, packet311 = PublishPacket.build_package(Message(topic, b"p" * payload, qos=qos), _Proto(MQTTv311))
    assert len(packet311) <= publish_packet_bytes(len(topic.encode()), payload, qos, properties_bytes(False, None))


def test_topic_rules() -> None:
    assert topic_problem("edge/gw/alerts/m1") is None
    assert topic_problem("x" * MAX_TOPIC_BYTES) is None
    for bad, reason in [
        ("", "bad_topic"), ("x" * (MAX_TOPIC_BYTES + 1), "topic_too_long"), ("é" * 40_000, "topic_too_long"),
        ("a/+/b", "bad_topic"), ("a/#", "bad_topic"), ("a\x00b", "bad_topic"), ("a\ud800", "bad_topic"),
    ]:
        problem = topic_problem(bad)
        assert problem is not None and problem.reason == reason, bad[:20]


def test_check_publish_against_a_broker_limit_and_the_budget_agrees() -> None:
    check_publish("t/x", 16_000, 1, 6, limit=16_384)
    with pytest.raises(Unsendable) as exc:
        check_publish("t/x", 16_384, 1, 6, limit=16_384)
    assert exc.value.reason == "too_large"
    budget = payload_budget("t/x", 1, 6, limit=16_384)
    check_publish("t/x", budget, 1, 6, limit=16_384)
    assert budget > 16_384 - 30
    assert payload_budget("t", 1, 0) <= MAX_PACKET_BYTES


def test_fit_answer_cuts_a_status_listing_and_says_where_to_go_on() -> None:
    series = [{"series": f"m{i:04d}/temp", "state": "normal", "readings": i} for i in range(2000)]
    doc = {"command": "status", "status": "done", "result": {"series": series, "total": 2000, "offset": 0, "truncated": False}}
    out = fit_answer(doc, 16_000)
    assert out is not None and len(out) <= 16_000
    result = json.loads(out)["result"]
    kept = len(result["series"])
    assert 100 < kept < 2000 and result["truncated"] is True and result["next_offset"] == kept
    assert result["series"] == series[:kept]
    # As many as fit: one more would not.
    assert len(fit_answer(doc, len(out)) or b"") == len(out)


def test_fit_answer_shortens_other_lists_then_gives_up_cleanly() -> None:
    fitted = [{"series": f"s{i}", "version": 1} for i in range(1000)]
    doc = {"command": "fit", "status": "done", "result": {"fitted": fitted, "errors": []}}
    out = json.loads(fit_answer(doc, 2_000) or b"")
    assert out["result"]["fitted_omitted"] == 1000 - len(out["result"]["fitted"])
    assert fit_answer(doc, 10) is None
    small = {"command": "fit", "status": "failed", "error": "e" * 5000}
    assert json.loads(fit_answer(small, 500) or b"") == {"command": "fit", "status": "failed"}


def test_fit_answer_cuts_the_machines_of_a_status_first() -> None:
    """``status`` without a series pattern lists the machines on its first page only: cut first
    (they are named in ``machines_omitted``), so the series page it answers stays whole and its
    ``next_offset`` moves on (GET /machines and ``status {"machine": id}`` have the rest)."""
    series = [{"series": f"m{i:04d}/temp", "state": "normal"} for i in range(50)]
    machines = [{"machine": f"line1/p{i:03d}", "state": "normal", "top_sensors": ["current high", "flow low"]} for i in range(500)]
    doc = {"command": "status", "status": "done",
           "result": {"series": series, "total": 50, "offset": 0, "truncated": False, "machines": machines}}
    out = fit_answer(doc, 16_000)
    assert out is not None and len(out) <= 16_000
    result = json.loads(out)["result"]
    kept = len(result["machines"])
    assert 0 < kept < 500 and result["machines_omitted"] == 500 - kept and result["machines"] == machines[:kept]
    assert result["series"] == series and result["truncated"] is False
