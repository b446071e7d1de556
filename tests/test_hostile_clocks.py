"""Hostile-input campaign, attack class *clocks*: device clocks that jump ahead, step back, lag
another topic of the same series, or stamp many readings alike. Through a real broker into a
real agent; each case asserts its anomaly is alarmed, then the campaign's invariants."""

from __future__ import annotations

import time

import pytest
from campaign import MIN_TRAIN, SPIKE, Campaign
from helpers import wait_for

OVERRIDES = {"http.enabled": True, "alarms.clear_after": 3}


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
