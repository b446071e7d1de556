"""Hostile-input campaign, attack class *payloads*: huge finite values, and a hypothesis-driven
generator of payloads published through a real broker into a real agent. Every case ends with
the campaign's invariants, which include that every alarm SCADA received is strict JSON."""

from __future__ import annotations

import json

import pytest
from campaign import MIN_TRAIN, SPIKE, Campaign, strict_loads
from helpers import wait_for
from hostile_strategies import payloads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HUGE = [1e155, 1e200, -1e300, 1.7976931348623157e308, 10**400]


def train_with(c: Campaign, topic: str, payloads: list[bytes]) -> None:
    before = c.agent.models_active()
    for p in payloads:
        c.plc.publish(topic, p).wait_for_publish(10)
    wait_for(lambda: c.agent.models_active() > before, 30, f"a model for {topic}")


def reading(c: Campaign, topic: str, value: object) -> bytes:
    return json.dumps({"value": value, "ts": c.next_ts(topic)}).encode()


@pytest.mark.parametrize("detector", ["adaptive", "statistical"])
def test_a_1e200_reading_leaves_the_series_able_to_alarm(make_campaign, detector: str) -> None:
    # Issue 15, finding 5: one reading of ~1e155 or more overflowed the variance; the default
    # detector then scored 0 for ever, inside the training window it poisoned either
    # detector's model, and statistical alarmed with "score": Infinity (not JSON).
    c: Campaign = make_campaign(**{"http.enabled": True, "detector.name": detector})
    topic, series = "plant/huge/h1/temp", "h1/temp"
    noise = [reading(c, topic, float(v)) for v in c.rng.uniform(-1, 1, MIN_TRAIN)]
    train_with(c, topic, noise[:40] + [reading(c, topic, 1e200)] + noise[40:])  # inside the training window
    for v in HUGE:
        c.plc.publish(topic, reading(c, topic, v)).wait_for_publish(10)
    c.calm(topic, 5)
    alarm = c.spike(topic, series)
    assert alarm["value"] == SPIKE
    rejected = c.metrics()
    assert rejected['edge_agent_readings_rejected_total{reason="out_of_range"}'] == 5
    assert rejected['edge_agent_readings_rejected_total{reason="non_finite"}'] == 1  # 10**400: beyond float range
    c.assert_invariants()


# ---- the generator (strategies in hostile_strategies.py) ----------------------------------------
@pytest.fixture(scope="module")
def gen(module_campaign) -> Campaign:
    return module_campaign(**{"http.enabled": True, "alarms.clear_after": 3})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(st.tuples(st.sampled_from(["plant/gen/g1/v", "plant/gen/g2/v", "plant/canary/c0/probe"]), payloads()), min_size=1, max_size=30))
def test_generated_payloads_never_stop_scoring_or_alarms(gen: Campaign, batch: list[tuple[str, bytes]]) -> None:
    for topic, payload in batch:
        gen.plc.publish(topic, payload).wait_for_publish(10)
    gen.assert_invariants()
    assert not any("internal_error" in k for k in gen.metrics()), "a payload hit a bug in the agent"
    for a in gen.scada.messages:
        strict_loads(a[1])
