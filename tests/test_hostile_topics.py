"""Hostile-input campaign, attack class *topics*: a hypothesis-driven generator of topic and
payload pairs published through a real broker into one real agent (shared by the module).
After each drawn batch: the agent is alive and scoring, the canary's alarm reaches SCADA as
strict JSON, no message hit a bug (internal_error), and the model store holds nothing but
path-safe directory names."""

from __future__ import annotations

import re

import pytest
from campaign import Campaign
from hostile_strategies import SPECIAL_TOPICS, payloads, topics
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SAFE = re.compile(r"^[A-Za-z0-9_%~-]+$")


@pytest.fixture(scope="module")
def c(module_campaign) -> Campaign:
    # A low training size, so that drawn topics that get enough good readings train too.
    return module_campaign(**{"http.enabled": True, "alarms.clear_after": 3, "detector.min_train_samples": 100})


def check(c: Campaign) -> None:
    c.assert_invariants()
    assert not any("internal_error" in k for k in c.metrics()), "a message hit a bug in the agent"
    models = c.agent.state_dir / "models"
    names = [p.name for p in models.iterdir()] if models.is_dir() else []
    assert all(SAFE.match(n) for n in names if not n.startswith(".")), [n for n in names if not SAFE.match(n)][:5]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(st.tuples(topics(), payloads()), min_size=1, max_size=40))
def test_generated_topics_and_payloads_never_stop_scoring_or_alarms(c: Campaign, batch: list[tuple[str, bytes]]) -> None:
    c.flood(batch, qos=1)
    check(c)


def test_the_nasty_topics_each_with_enough_good_readings_to_train(c: Campaign) -> None:
    # Every special topic gets a training window of good readings: the ones that make a series
    # train in their own directory, the others are refused; the invariants hold throughout.
    for topic in SPECIAL_TOPICS:
        c.flood([(topic, b'{"value": %d}' % (k % 3)) for k in range(110)], qos=1)
    check(c)
