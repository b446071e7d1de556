"""Hostile-input campaign, attack class *clocks*: device clocks that jump ahead, step back, lag
another topic of the same series, or stamp many readings alike. Through a real broker into a
real agent; each case asserts its anomaly is alarmed, then the campaign's invariants."""

from __future__ import annotations

import json
import time

import pytest
from campaign import MIN_TRAIN, SPIKE, Campaign
from helpers import wait_for

OVERRIDES = {
    "http.enabled": True,
    "alarms.clear_after": 3,
    "subscriptions": [
        {"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}"},
        {"topic": "batch/{machine}/{sensor}", "series": "b/{machine}/{sensor}", "format": "json_batch"},
    ],
}


@pytest.fixture
def c(module_campaign) -> Campaign:
    return module_campaign(**OVERRIDES)


def live(c: Campaign, topic: str, values: list[float], offset: float = 0.0, interval: float = 0.02) -> None:
    """Readings stamped with the publisher's clock (+ ``offset``), ``interval`` apart, as a
    device with a clock of its own would send them."""
    for v in values:
        c.plc.reading(topic, v, time.time() + offset).wait_for_publish(10)
        time.sleep(interval)


def train_live(c: Campaign, topic: str, offset: float = 0.0) -> None:
    before = c.agent.models_active()
    live(c, topic, c.rng.uniform(-1, 1, MIN_TRAIN).tolist(), offset, interval=0.002)
    wait_for(lambda: c.agent.models_active() > before, 30, f"a model for {topic}")


def stale(c: Campaign) -> float:
    return c.metrics().get('edge_agent_readings_rejected_total{reason="stale"}', 0.0)


def noise(c: Campaign, n: int) -> list[float]:
    return c.rng.uniform(-1, 1, n).tolist()


def test_a_reading_stamped_25_minutes_ahead_does_not_hold_the_series(c: Campaign) -> None:
    # Issue 15, finding 4: the next 400 readings were refused and the anomaly among them missed.
    topic, series = "plant/clk/f1/temp", "f1/temp"
    train_live(c, topic)
    before = stale(c)
    live(c, topic, [0.1], offset=25 * 60)
    live(c, topic, noise(c, 20) + [SPIKE] + noise(c, 5))
    wait_for(lambda: c.alarms(series, "raised"), 10, "the spike after the future-stamped reading alarmed")
    assert [a["value"] for a in c.alarms(series, "raised")] == [SPIKE]
    assert stale(c) == before
    c.assert_invariants()


def test_an_ntp_step_back_of_10_minutes_is_followed_and_its_anomaly_alarmed(c: Campaign) -> None:
    # Issue 15, finding 4: 599 of 600 readings after the step were refused.
    topic, series = "plant/clk/n1/temp", "n1/temp"
    train_live(c, topic)
    before = stale(c)
    live(c, topic, noise(c, 30) + [SPIKE] + noise(c, 100), offset=-600, interval=0.03)
    wait_for(lambda: c.alarms(series, "raised"), 10, "the spike after the clock step alarmed")
    assert [a["value"] for a in c.alarms(series, "raised")] == [SPIKE]
    assert stale(c) == before  # none lost: the first readings after the step were held, then scored
    assert c.metrics()["edge_agent_clock_steps_followed_total"] >= 1
    c.assert_invariants()


def test_two_lines_with_clocks_apart_feeding_one_series_are_both_scored(c: Campaign) -> None:
    # Issue 15, finding 4: plant/L1/m1/temp and plant/L2/m1/temp are one series under the
    # default template; with line 2's clock 90 s behind, all of line 2 was refused.
    l1, l2, series = "plant/L1/two/temp", "plant/L2/two/temp", "two/temp"
    before_models, before = c.agent.models_active(), stale(c)
    for v1, v2 in zip(noise(c, MIN_TRAIN // 2 + 1), noise(c, MIN_TRAIN // 2 + 1), strict=True):
        c.plc.reading(l1, v1, time.time()).wait_for_publish(10)
        c.plc.reading(l2, v2, time.time() - 90).wait_for_publish(10)
    wait_for(lambda: c.agent.models_active() > before_models, 30, "a model for the shared series")
    for k in range(20):
        c.plc.reading(l1, float(c.rng.uniform(-1, 1)), time.time()).wait_for_publish(10)
        c.plc.reading(l2, SPIKE if k == 10 else float(c.rng.uniform(-1, 1)), time.time() - 90).wait_for_publish(10)
    wait_for(lambda: c.alarms(series, "raised"), 10, "line 2's spike alarmed")
    assert stale(c) == before
    health = c.healthcheck()
    assert any("more than one topic" in w for w in health["warnings"]), health["warnings"]
    assert c.metrics()["edge_agent_series_shared_topics"] >= 1
    c.assert_invariants()


def test_two_alarms_within_one_device_timestamp_have_two_ids(c: Campaign) -> None:
    # Issue 15, finding 3: alert_id hashed the reading timestamp, so a coarse device clock gave
    # two different alarms (and their clears) one id, and SCADA, deduplicating on it, lost them.
    topic, series = "plant/clk/coarse/temp", "coarse/temp"
    train_live(c, topic)
    t = time.time()
    for v in (SPIKE, 0.0, 0.1, 0.2, SPIKE, 0.0, 0.1, 0.2):
        c.plc.reading(topic, v, t).wait_for_publish(10)
    wait_for(lambda: len(c.alarms(series)) == 4, 10, "two alarms raised and cleared")
    alarms = c.alarms(series)
    assert [(a["state"], a["ts"], a["seq"]) for a in alarms] == [("raised", t, 1), ("cleared", t, 1), ("raised", t, 2), ("cleared", t, 2)]
    assert len({a["alert_id"] for a in alarms}) == 4
    assert alarms[1]["raised_alert_id"] == alarms[0]["alert_id"] and alarms[3]["raised_alert_id"] == alarms[2]["alert_id"]
    c.assert_invariants()


def test_two_alarms_in_one_json_batch_without_timestamps_have_two_ids(c: Campaign) -> None:
    # A json_batch without timestamps stamps every reading with its receive time.
    topic, series = "batch/jb/temp", "b/jb/temp"
    before = c.agent.models_active()
    c.plc.publish(topic, json.dumps({"values": noise(c, MIN_TRAIN)})).wait_for_publish(10)
    wait_for(lambda: c.agent.models_active() > before, 30, f"a model for {series}")
    c.plc.publish(topic, json.dumps({"values": [SPIKE, 0.0, 0.1, 0.2, SPIKE, 0.0, 0.1, 0.2]})).wait_for_publish(10)
    wait_for(lambda: len(c.alarms(series)) == 4, 10, "two alarms raised and cleared")
    alarms = c.alarms(series)
    assert len({a["ts"] for a in alarms}) == 1 and len({a["alert_id"] for a in alarms}) == 4
    c.assert_invariants()


def test_alarm_numbers_survive_a_crash_and_a_redelivered_spike_raises_nothing(make_campaign) -> None:
    # The sequence number is committed with the alarm (outbox alarm_seq): a restart neither
    # reuses it nor scores again, with a new id, a reading from before the last alarm edge.
    c: Campaign = make_campaign(**{"alarms.clear_after": 3})
    topic, series = "plant/crash/k1/temp", "k1/temp"
    c.train(topic)
    t_spike = c.next_ts(topic)
    first = [(SPIKE, t_spike)] + [(0.1 * k, c.next_ts(topic)) for k in range(3)]
    for v, t in first:
        c.publish(topic, v, t)
    wait_for(lambda: len(c.alarms(series)) == 2, 10, "the first alarm raised and cleared")
    c.restart(kill=True)
    for v, t in first[:2]:  # the broker redelivers what the crash left unacknowledged
        c.publish(topic, v, t)
    c.calm(topic, 3)
    spike = c.spike(topic, series)
    raised = c.alarms(series, "raised")
    assert [a["seq"] for a in raised] == [1, 2] and spike["ts"] > t_spike
    assert raised[0]["alert_id"] != raised[1]["alert_id"]
    c.assert_invariants()
