"""The per-series ring: what a fit trains on and what a plot shows, across the wrap-around."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.series import BLOCK, Series


@pytest.mark.parametrize("n", [0, 1, 15, 16, 100, 256, 700])
def test_recent_values_are_the_newest_readings_oldest_first(n: int) -> None:
    s = Series("s", 256)
    for i in range(n):
        s.append(float(i), 1000.0 + i)
    held = list(range(max(0, n - 256), n))
    assert s.recent_values().tolist() == [float(i) for i in held]
    assert s.recent_values(10).tolist() == [float(i) for i in held[-10:]]
    times, values = s.recent()
    assert values.tolist() == s.recent_values().tolist()
    # Timestamps: exact at every block start and at the newest reading (interpolated between).
    exact = [k for k, i in enumerate(held) if i % BLOCK == 0 or i == n - 1]
    assert [times[k] for k in exact] == [1000.0 + held[k] for k in exact]


def test_append_many_matches_append() -> None:
    a, b = Series("a", 64), Series("b", 64)
    vals = np.arange(150, dtype=np.float64)
    for v in vals:
        a.append(float(v), 5.0 + v)
    b.append_many(vals[:7], 5.0 + vals[:7])
    b.append_many(vals[7:], 5.0 + vals[7:])
    assert a.recent_values().tolist() == b.recent_values().tolist()
    assert a.recent()[0].tolist() == b.recent()[0].tolist()
    assert (a.count, a.pos, a.last_ts) == (b.count, b.pos, b.last_ts)


def test_the_ring_grows_with_the_readings_and_keeps_them_all() -> None:
    s = Series("s", 4096)
    assert len(s.values) == 0
    s.append(0.0, 1.0)
    assert len(s.values) == BLOCK and len(s.bts) == 1
    for i in range(1, 1000):
        s.append(float(i), 1.0 + i)
    assert len(s.values) == 1024  # doubled from 16: 16, 32, ... 1024
    assert s.recent_values().tolist() == [float(i) for i in range(1000)]
    for i in range(1000, 5000):
        s.append(float(i), 1.0 + i)
    assert len(s.values) == 4096 and s.recent_values().tolist() == [float(i) for i in range(5000 - 4096, 5000)]


@pytest.mark.parametrize("chunks", [[1, 40, 3], [5000], [16, 16, 17], [7, 300, 1, 4000, 900]])
def test_append_many_grows_the_ring_like_append(chunks: list[int]) -> None:
    a, b = Series("a", 1000), Series("b", 1000)
    vals = np.arange(sum(chunks), dtype=np.float64)
    for v in vals:
        a.append(float(v), 5.0 + v)
    start = 0
    for n in chunks:
        b.append_many(vals[start:start + n], 5.0 + vals[start:start + n])
        start += n
    assert a.recent_values().tolist() == b.recent_values().tolist()
    assert a.recent()[0].tolist() == b.recent()[0].tolist()
    assert (a.count, a.pos, a.last_ts) == (b.count, b.pos, b.last_ts)


def test_a_one_reading_series_costs_hundreds_of_bytes_and_the_budget_counts_them() -> None:
    # Issue 15: the whole ring (34 kB at 4096 readings) was allocated on a series' first
    # reading; 100,000 junk one-reading series took RSS to 3.5 GB. Measured with tracemalloc,
    # as the pipeline and ingest hold them (series dict, route cache), against nbytes.
    import gc
    import json
    import time
    import tracemalloc

    from edge_agent.config import AgentConfig
    from edge_agent.ingest import Ingest
    from edge_agent.pipeline import InlineTrainer, Pipeline

    cfg = AgentConfig.model_validate({"detector": {"name": "statistical", "min_train_samples": 100}})
    pipe = Pipeline(cfg, InlineTrainer(), lambda e: None)
    ing = Ingest(cfg, pipe)
    now = time.time()
    msgs = [(f"plant/junk{k}/m{k}/t", json.dumps({"value": 1.0, "ts": now}).encode()) for k in range(5000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for topic, payload in msgs:
            ing.handle(topic, payload)
        gc.collect()
        per_series = (tracemalloc.get_traced_memory()[0] - before) / len(msgs)
    finally:
        tracemalloc.stop()
    assert len(pipe.series) == len(msgs)
    assert per_series < 1500, f"{per_series:.0f} bytes per one-reading series"
    estimate = pipe.series_bytes.bytes / len(msgs)
    assert abs(estimate - per_series) < 0.3 * per_series, (estimate, per_series)
