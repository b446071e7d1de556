"""100,000 hostile messages through a real broker into a real agent: it stays alive and
scoring, its resident memory grows by less than 20 MB, and rejects are counted by reason."""

from __future__ import annotations

import collections
import json
import re
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
from faults import (
    PAYLOAD_CASES,
    Collector,
    PacedPublisher,
    hostile_topics,
    materialise,
    reading,
    rss_kb,
)
from helpers import AgentProcess, Mosquitto, agent_config, free_port, wait_for

GOOD = "plant/l1/m1/temp"
N_FLOOD = 100_000


def corpus(n: int, seed: int, start: int) -> list[tuple[str, bytes]]:
    """n hostile messages: corpus payloads on good and hostile topics, unique junk topics,
    64 KB topic names. No 10 MB payloads here (sent separately) and no reading that could
    train or alarm on the good series."""
    rng = np.random.default_rng(seed)
    payloads = [materialise(p) for name, p, reason in PAYLOAD_CASES if reason is not None and name != "ten_mb"]
    topics = [t for t in hostile_topics() if t.startswith("plant/")]
    out = []
    for k in range(n):
        r = rng.random()
        payload = payloads[int(rng.integers(len(payloads)))]
        if r < 0.4:
            topic = GOOD
        elif r < 0.7:
            topic = topics[int(rng.integers(len(topics)))]
        elif r < 0.9999:
            topic = f"plant/junk{start + k}/m{start + k}/t"  # every one new: must not be cached
        else:
            topic = "plant/l1/" + "x" * 65_000 + "/t"
        out.append((topic, payload))
    return out


def flood(client: paho.Client, rows: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(t, p, qos=0) for t, p in rows]
    deadline = time.monotonic() + 60
    for info in infos[-100:]:
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))


@pytest.mark.timeout(150)
def test_100k_hostile_messages_leave_the_agent_alive_scoring_and_bounded(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    cfg = agent_config(tmp_path, broker, **{"alarms.clear_after": 3, "ingest.reject_log_interval_s": 1.0,
                                            "ingest.dead_letter_topic": "edge/{gateway_id}/dead"})
    agent = AgentProcess(tmp_path, cfg).start()
    logging_since = time.monotonic()  # the reject lines counted below span the agent's whole log
    scada = Collector(broker, "edge/gw-test/alerts/#", clean=True)
    dead = Collector(broker, "edge/gw-test/dead", clean=True)
    pub = PacedPublisher(broker)
    junk = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"junk-{free_port()}")
    junk.max_queued_messages_set(0)
    junk.connect(broker.host, broker.port)
    junk.loop_start()
    try:
        agent.wait_connected()
        rng = np.random.default_rng(3)
        now = time.time()
        pub.publish_chunk([(GOOD, reading(float(rng.uniform(-1, 1)), now - 200 + k)) for k in range(100)])
        wait_for(lambda: agent.models_active() == 1, 20, "model for the good series")

        def spike_then_clear(n: int) -> None:
            t = time.time()
            pub.publish_chunk([(GOOD, reading(50.0, t))] + [(GOOD, reading(0.0, t + 0.001 * i)) for i in range(1, 4)])
            wait_for(lambda: len([a for a in scada.json() if a["state"] == "cleared"]) >= n, 60, f"alarm {n} raised and cleared")

        # Warm-up: a first pass of the corpus, so allocator pools and caches exist.
        flood(junk, corpus(20_000, 1, 0))
        spike_then_clear(1)
        rss_before = rss_kb(agent.proc.pid)
        t = time.monotonic()
        flood(junk, corpus(N_FLOOD, 2, 1_000_000))
        for _ in range(3):
            junk.publish(GOOD, b'{"value": 1, "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}', qos=0)
        spike_then_clear(2)  # in order after the flood: scoring works once the flood is through
        took = time.monotonic() - t
        rss_after = rss_kb(agent.proc.pid)
        assert agent.proc.poll() is None
        growth_mb = (rss_after - rss_before) / 1024
        print(f"\n{N_FLOOD:,} hostile messages + 3 x 10 MB in {took:.1f} s ({N_FLOOD / took:,.0f} msg/s); "
              f"RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MB (growth {growth_mb:+.1f} MB)")
        totals = re.findall(r"rejected so far: (.*)", agent.log())
        assert totals, "no rate-limited reject line in the log"
        counts = dict(kv.split("=") for kv in totals[-1].split(", "))
        print(f"rejected by reason (last log line): {counts}; log lines about rejects: {len(totals)}; dead letters seen: {len(dead.messages)}")
        assert {"bad_json", "non_finite", "not_a_number", "ts_out_of_range", "unknown_topic", "bad_utf8", "empty"} <= set(counts)
        # Rate-limited per reason (ingest.reject): at most one line per reason per interval, so
        # every kind of junk shows up, and a flood of one kind cannot hide the first of another.
        # The bound is over the log's whole span (warm-up flood included), not the timed flood:
        # counting warm-up lines against the flood's time alone failed CI at 25 lines in 20 s.
        per_reason = collections.Counter(re.findall(r"rejected reading on .*?: (\w+) ", agent.log()))
        logged_for = time.monotonic() - logging_since
        assert sum(per_reason.values()) == len(totals)
        assert max(per_reason.values()) <= logged_for / 1.0 + 2, f"reject logging is not rate-limited: {per_reason} in {logged_for:.1f} s"
        assert dead.messages and all(json.loads(p)["reason"] for _, _, p, _ in dead.messages[:100])
        raised = [a for a in scada.json() if a["state"] == "raised"]
        assert [a["value"] for a in raised] == [50.0, 50.0]
        assert growth_mb < 20, f"RSS grew {growth_mb:.1f} MB over the flood"
    finally:
        junk.loop_stop()
        junk.disconnect()
        pub.close()
        scada.close()
        dead.close()
        assert agent.stop() == 0
        broker.stop()
