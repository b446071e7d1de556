"""Part 10, live state: what keeping the series' live state costs (series_live.py): the
snapshot on the event loop, whole and per slice, and the encode + write + read off it, for
1,000 and 5,000 robust series; and what keeping an evicted series' live state costs at its
eviction (``evicted_live.py``: time on the loop, bytes counted in the budget).

    make bench BENCH_ARGS="--only livestate"     (or: .venv/bin/python -m bench.part_livestate [n ...])
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent import series_live
from edge_agent.config import AgentConfig
from edge_agent.evicted_live import EvictedLive
from edge_agent.model_store import Model
from edge_agent.pipeline import InlineTrainer, Pipeline
from edge_agent.series import SeriesBytes


def pipeline(n: int) -> Pipeline:
    """``n`` robust series, each fitted on 500 readings of a trend and past its first 1,000 scored."""
    rng = np.random.default_rng(0)
    cfg = AgentConfig.model_validate({"detector": {"name": "robust", "min_train_samples": 500}, "series": {"buffer_size": 512}})
    pipe = Pipeline(cfg, InlineTrainer(), lambda ev: None)
    template = "bench/0"
    for i in range(1500):
        pipe.process(template, 50.0 + 0.002 * i + float(rng.normal(0, 1)), 1.7e9 + 60.0 * i)
    m = pipe.series[template].model
    params, arrays = m.detector.get_state()
    for k in range(1, n):
        pipe.adopt(f"bench/{k}", Model(type(m.detector).from_state(params, arrays), m.version, m.meta))
    return pipe


def measure(n: int) -> dict[str, Any]:
    """The max slice includes any cyclic collection the snapshot's allocations set off."""
    pipe = pipeline(n)
    gc.collect()
    gc.freeze()  # as the agent does after start-up (app.py): its models are not walked by full collections
    try:
        series = list(pipe.series.values())
        whole = []
        for _ in range(5):
            t0 = time.perf_counter()
            entries = series_live.take(series)
            whole.append(time.perf_counter() - t0)
        slices = []
        for _ in range(5):
            for i in range(0, len(series), series_live.SLICE):
                t0 = time.perf_counter()
                series_live.take(series[i:i + series_live.SLICE])
                slices.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / series_live.FILE
            t0 = time.perf_counter()
            written = series_live.write(path, entries)
            t_write = time.perf_counter() - t0
            size = path.stat().st_size
            t0 = time.perf_counter()
            restored, errors, _, _ = series_live.read(path, series_live.versions(pipe))
            t_read = time.perf_counter() - t0
        assert written == n and len(restored) == n and not errors
        t0 = time.perf_counter()
        asyncio.run(series_live.snapshot(pipe))
        t_sliced = time.perf_counter() - t0
        kept = EvictedLive(SeriesBytes())
        t0 = time.perf_counter()
        for s in series:
            kept.keep(s)
        t_keep = time.perf_counter() - t0
    finally:
        gc.unfreeze()
    return {
        "series": n, "slice": series_live.SLICE,
        "one_pass_ms": round(1e3 * float(np.median(whole)), 2),
        "slice_median_ms": round(1e3 * float(np.median(slices)), 2), "slice_max_ms": round(1e3 * max(slices), 2),
        "sliced_wall_ms": round(1e3 * t_sliced, 1), "write_ms": round(1e3 * t_write, 1),
        "file_mb": round(size / 1e6, 2), "bytes_per_series": round(size / n), "read_ms": round(1e3 * t_read, 1),
        "evict_keep_us": round(1e6 * t_keep / n, 1), "evict_kept_bytes": round(kept.nbytes / n),
    }


def line(r: dict[str, Any]) -> str:
    return (f"{r['series']} series: snapshot in one pass median {r['one_pass_ms']} ms; per slice of {r['slice']} median "
            f"{r['slice_median_ms']} ms, max {r['slice_max_ms']} ms; sliced snapshot wall {r['sliced_wall_ms']} ms; off the loop: "
            f"encode+write+fsync {r['write_ms']} ms, file {r['file_mb']} MB ({r['bytes_per_series']} B/series), "
            f"read+from_state {r['read_ms']} ms; at an eviction: keep {r['evict_keep_us']} us/series on the loop, "
            f"{r['evict_kept_bytes']} B/series in the budget")


def run(quick: bool = False) -> dict[str, Any]:
    out = {"method": "robust series (trend, 1,000 readings past the fit) in one Pipeline; gc frozen as in the agent; "
                     "snapshot = get_state + array copies on the loop thread; write and read off it",
           "by_series": [measure(n) for n in ((1000,) if quick else (1000, 5000))]}
    for r in out["by_series"]:
        print("  " + line(r), flush=True)
    return out


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [1000, 5000]:
        print(line(measure(n)))
