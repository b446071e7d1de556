"""What keeping the series' live state costs (series_live.py): the snapshot on the event loop,
whole and per slice, and the encode + write off it, for 1,000 and 5,000 robust series.

    .venv/bin/python -m bench.series_live_state [n ...]
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_agent import series_live
from edge_agent.config import AgentConfig
from edge_agent.model_store import Model
from edge_agent.pipeline import InlineTrainer, Pipeline


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


def main(sizes: list[int]) -> None:
    """The max slice includes any cyclic collection the snapshot's allocations set off."""
    for n in sizes:
        pipe = pipeline(n)
        gc.collect()
        gc.freeze()  # as the agent does after start-up (app.py): its models are not walked by full collections
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
            versions = series_live.versions(pipe)
            t0 = time.perf_counter()
            restored, errors, _ = series_live.read(path, versions)
            t_read = time.perf_counter() - t0
        assert written == n and len(restored) == n and not errors
        t_async = time.perf_counter()
        asyncio.run(series_live.snapshot(pipe))
        t_async = time.perf_counter() - t_async
        print(f"{n} series: snapshot in one pass median {1e3 * float(np.median(whole)):.1f} ms; "
              f"per slice of {series_live.SLICE} median {1e3 * float(np.median(slices)):.2f} ms, max {1e3 * max(slices):.2f} ms; "
              f"sliced snapshot wall {1e3 * t_async:.1f} ms; off the loop: encode+write+fsync {1e3 * t_write:.0f} ms, "
              f"file {size / 1e6:.1f} MB ({size / n:.0f} B/series), read+from_state {1e3 * t_read:.0f} ms")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 5000])
