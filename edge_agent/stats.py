"""Cheap latency recording for the hot path: fixed buckets plus a ring for percentiles.

prometheus-client histograms take a lock per observation; the ingest path instead records
into plain arrays here and the metrics endpoint reads them at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

# Seconds. Spans a sub-microsecond score to a multi-second fit.
DEFAULT_BUCKETS: tuple[float, ...] = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
    2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class LatencyRecorder:
    __slots__ = ("buckets", "counts", "total", "n", "ring", "ring_pos")

    def __init__(self, buckets: tuple[float, ...] = DEFAULT_BUCKETS, ring_size: int = 4096) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0
        self.ring = np.zeros(ring_size, dtype=np.float64)
        self.ring_pos = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.n += 1
        ring = self.ring
        ring[self.ring_pos] = seconds
        self.ring_pos = (self.ring_pos + 1) % ring.shape[0]

    def summary(self) -> dict[str, float | int]:
        """avg / p50 / p95 / p99 / max over the recent ring, in milliseconds."""
        held = min(self.n, self.ring.shape[0])
        if held == 0:
            return {"count": 0, "avg_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        recent = self.ring[:held] * 1e3
        p50, p95, p99 = np.percentile(recent, [50, 95, 99])
        return {
            "count": self.n,
            "avg_ms": float(recent.mean()),
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
            "max_ms": float(recent.max()),
        }

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus-style cumulative bucket counts, ``+Inf`` last."""
        out, acc = [], 0
        for bound, c in zip(self.buckets, self.counts, strict=False):
            acc += c
            out.append((repr(bound), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out
