"""Part 5, memory: VmRSS of the agent idle, with 1,000 and with 10,000 series (trained models
plus ring buffers filled to series.buffer_size readings), and what one-reading series on junk
topics cost (rings grow with their readings; issue 15 measured ~36 kB each before)."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from bench.common import (
    BenchAgent,
    http_get,
    make_models,
    series_id,
    start_broker,
    wait_for,
    workdir,
)

BATCH_SUB = {"topic": "bench/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}", "format": "json_batch", "qos": 1}
READING_SUB = {"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}", "format": "json", "qos": 1}


def _settled_rss(agent: BenchAgent, seconds: float = 2.0) -> int:
    """Max VmRSS (kB) over a short settle window."""
    end = time.monotonic() + seconds
    best = 0
    while time.monotonic() < end:
        best = max(best, agent.rss())
        time.sleep(0.2)
    return best


def _publish_all(pub: Any, messages: Any, window: int) -> None:
    """QoS 1, at most ``window`` unacknowledged at once."""
    infos = []
    for topic, body in messages:
        infos.append(pub.publish(topic, body, qos=1))
        if len(infos) >= window:
            for inf in infos:
                inf.wait_for_publish(60)
            infos.clear()
    for inf in infos:
        inf.wait_for_publish(60)


def _fill(agent: BenchAgent, broker: Any, n_series: int, per_series: int) -> float:
    """Send ``per_series`` readings to each series as json_batch messages; wait until all are in."""
    from bench.common import _h

    pub = _h.Publisher(broker)
    rng = np.random.default_rng(11)
    start = time.time() - per_series * 0.1 - 60
    t0 = time.monotonic()
    try:
        base = agent.metric("readings_received")

        def messages() -> Any:
            for i in range(n_series):
                vals = np.round(rng.uniform(19.0, 21.0, per_series), 2).tolist()
                yield f"bench/l1/{series_id(i).split('/')[0]}/temp", json.dumps({"values": vals, "start": start, "interval_ms": 100}, separators=(",", ":"))

        _publish_all(pub, messages(), 500)
        want = base + n_series * per_series
        wait_for(lambda: agent.metric("readings_received") >= want, 300, f"{want} readings received", interval=0.5)
    finally:
        pub.close()
    return time.monotonic() - t0


def _one(broker: Any, n_series: int, per_series: int) -> dict[str, Any]:
    tmp = workdir(f"memory-{n_series}")
    make_models(tmp / "state", n_series)
    agent = BenchAgent(tmp, broker, name="agent", subscriptions=[READING_SUB, BATCH_SUB], **{"mqtt.client_id": f"mem-{n_series}"})
    agent.start()
    try:
        agent.wait_ready(60)
        loaded = _settled_rss(agent)
        fill_s = _fill(agent, broker, n_series, per_series)
        full = _settled_rss(agent)
        hc = agent.healthcheck()
        return {
            "series": n_series,
            "readings_per_series": per_series,
            "rss_models_loaded_empty_buffers_mb": loaded / 1024,
            "rss_full_buffers_mb": full / 1024,
            "per_series_kb": (full - 0) / n_series,
            "fill_s": fill_s,
            "trained_series": hc.get("trained_series"),
            "readings_total": hc.get("readings_total"),
        }
    finally:
        agent.stop()


def _junk(broker: Any, n: int) -> dict[str, Any]:
    """RSS growth over ``n`` one-reading series on fresh topics (a junk flood), per series."""
    from bench.common import _h

    tmp = workdir(f"memory-junk-{n}")
    agent = BenchAgent(tmp, broker, name="junk", **{"mqtt.client_id": f"mem-junk-{n}"})
    agent.start()
    pub = _h.Publisher(broker)
    try:
        agent.wait_ready(60)
        time.sleep(1.0)
        before = _settled_rss(agent)
        base = agent.metric("readings_received")
        ts = time.time() - 60
        _publish_all(pub, ((f"plant/junk/j{k}/t", json.dumps({"value": 1.0, "ts": ts})) for k in range(n)), 1000)
        wait_for(lambda: agent.metric("readings_received") >= base + n, 120, f"{n} junk readings received", interval=0.5)
        after = _settled_rss(agent)
        budget = agent.healthcheck().get("series_budget", {})
        return {
            "series": n,
            "rss_before_mb": before / 1024,
            "rss_after_mb": after / 1024,
            "per_series_bytes": (after - before) * 1024 / n,
            "budget_counts_bytes_per_series": budget.get("bytes", 0) / max(1, budget.get("series", 1)),
        }
    finally:
        pub.close()
        agent.stop()


def run(quick: bool = False) -> dict[str, Any]:
    broker = start_broker("broker-memory")
    try:
        tmp = workdir("memory-idle")
        agent = BenchAgent(tmp, broker, name="idle", **{"mqtt.client_id": "mem-idle"})
        agent.start()
        try:
            agent.wait_ready(60)
            time.sleep(1.0)
            idle = _settled_rss(agent)
            code, _ = http_get(agent.url("/metrics"))
            after_scrape = _settled_rss(agent, 1.0)
        finally:
            agent.stop()
        buffer_size = 4096
        out: dict[str, Any] = {
            "buffer_size": buffer_size,
            "filled_with": f"{buffer_size} readings per series (series.buffer_size, the default: a full ring, the steady state "
                           "of any series that has run for a while), sent as json_batch messages; a trained statistical model per series "
                           "written with ModelStore.save before start",
            "idle_rss_mb": idle / 1024,
            "idle_after_metrics_scrape_rss_mb": after_scrape / 1024,
            "stages": [],
        }
        for n in ((1000,) if quick else (1000, 10_000)):
            st = _one(broker, n, buffer_size)
            st["per_series_kb"] = (st["rss_full_buffers_mb"] * 1024 - idle) / n
            st["per_series_kb_models_only"] = (st["rss_models_loaded_empty_buffers_mb"] * 1024 - idle) / n
            out["stages"].append(st)
        out["ring_buffer_bytes_per_series"] = buffer_size * 8 + buffer_size // 16 * 8  # values, one ts per 16
        out["junk_one_reading_series"] = _junk(broker, 10_000 if quick else 30_000)
        return out
    finally:
        broker.stop()


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1))
