"""The campaign harness itself: on a healthy agent the invariants hold, and they catch a dead
agent (a harness that could not fail would prove nothing)."""

from __future__ import annotations

import pytest
from campaign import CANARY_SERIES


def test_invariants_hold_on_a_healthy_agent(make_campaign) -> None:
    c = make_campaign()
    first = c.assert_invariants()
    second = c.assert_invariants()  # a second check calms the first alarm and raises again
    assert first["alert_id"] != second["alert_id"]
    assert len(c.alarms(CANARY_SERIES, "raised")) == 2


def test_invariants_fail_when_the_agent_is_dead(make_campaign) -> None:
    c = make_campaign()
    c.agent.kill()
    with pytest.raises(AssertionError, match="agent exited"):
        c.assert_invariants()
