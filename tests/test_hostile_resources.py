"""Hostile-input campaign, attack class *resources*: junk series, a small series budget, a full
or read-only state directory. Each case: real broker, real agent, attack, then the invariants
(the agent scores, and its alarm reaches SCADA)."""

from __future__ import annotations

import json
import time

from campaign import Campaign

N_JUNK = 30_000


def junk(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    """One good reading on each of ``n`` fresh topics: n one-reading series."""
    ts = time.time() - 60
    return [(f"plant/junk/j{start + k}/t", json.dumps({"value": 1.0, "ts": ts}).encode()) for k in range(n)]


def test_30k_junk_series_cost_little_memory_and_a_new_series_still_trains_and_alarms(make_campaign) -> None:
    # Issue 15, finding 2: each one-reading series held a whole ring (~36 kB); 100,000 took
    # RSS from 70 MB to 3.5 GB, past the unit's MemoryMax at ~19,500.
    c: Campaign = make_campaign(**{"http.enabled": True})
    received = c.metrics()["edge_agent_messages_received_total"]
    rss_before = c.agent.rss_kb()
    c.flood(junk(N_JUNK))
    c.wait_received(received + N_JUNK)
    growth_mb = (c.agent.rss_kb() - rss_before) / 1024
    budget = c.healthcheck()["series_budget"]
    print(f"\n{N_JUNK:,} one-reading junk series: RSS +{growth_mb:.1f} MB; budget counts {budget['bytes'] / 1e6:.1f} MB "
          f"for {budget['series']} series")
    assert budget["series"] >= N_JUNK
    assert growth_mb < 150, f"RSS grew {growth_mb:.1f} MB over {N_JUNK} junk series"
    c.train("plant/late/l1/temp")
    c.spike("plant/late/l1/temp", "l1/temp")
    c.assert_invariants()


def test_junk_cannot_keep_new_series_out_of_a_small_budget(make_campaign) -> None:
    # With a low max_series, junk used to fill every slot and real sensors were refused for
    # good. Now one-reading series are evicted first, counted, logged, and shown in health.
    c: Campaign = make_campaign(**{"http.enabled": True, "series.max_series": 200})
    received = c.metrics()["edge_agent_messages_received_total"]
    c.flood(junk(5000))
    c.wait_received(received + 5000)
    c.train("plant/late/l1/temp")
    c.spike("plant/late/l1/temp", "l1/temp")
    c.assert_invariants()
    health = c.healthcheck()
    assert health["series_budget"]["evicted"]["new"] >= 5000 - 200
    assert health["series_budget"]["refused_readings"] == 0 and health["series_budget"]["series"] <= 200
    metrics = c.metrics()
    assert metrics['edge_agent_series_evicted_total{class="new"}'] >= 5000 - 200
    c.agent.wait_log("evicted", timeout=15)


def test_a_budget_full_of_busy_series_refuses_new_ones_and_health_says_so(make_campaign) -> None:
    # Nothing idle to evict (every series has readings, none is idle yet): the new series is
    # refused, and health says why instead of "ok".
    c: Campaign = make_campaign(**{"http.enabled": True, "series.max_series": 3})
    for topic in ("plant/busy/b1/t", "plant/busy/b2/t"):
        c.publish(topic, 1.0)
        c.publish(topic, 1.0)
    c.publish("plant/busy/b3/t", 1.0)
    time.sleep(0.5)
    health = c.healthcheck()
    assert health["status"] == "degraded"
    assert any("series budget full" in p for p in health["problems"]), health["problems"]
    assert c.metrics()["edge_agent_series_refused_total"] >= 1
    c.assert_invariants()

