"""Isolation-forest kernel micro-benchmark (standalone; ``bench.run`` may import ``measure``).

    .venv/bin/python bench/if_kernel.py            # 100 trees, max_samples 256, 4 features
    .venv/bin/python bench/if_kernel.py --rounds 5 --rows 100000

Prints single-reading latency (``score_one``, p50/p99 in microseconds) and batch throughput in
samples/s for ``score_features`` (the kernel on a prepared (n, 4) feature matrix) and
``score_many`` (features computed from raw readings + kernel). Timings on a shared machine are
noisy: each batch figure is the best of ``rounds`` runs, and the median is reported alongside.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.detectors.isolation_forest import IsolationForestDetector, shape_features  # noqa: E402


def _signal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = 50.0 + np.cumsum(rng.normal(size=n)) + 5.0 * np.sin(np.arange(n) / 20.0)
    v[rng.integers(0, n, size=max(1, n // 500))] += 30.0  # a few spikes
    return v


def measure(
    rows: int = 100_000,
    rounds: int = 5,
    single: int = 20_000,
    n_estimators: int = 100,
    max_samples: int = 256,
    window: int = 16,
) -> dict[str, Any]:
    """Fit a forest on 4 shape features, then time ``score_one`` and the batch paths."""
    d = IsolationForestDetector(window=window, n_estimators=n_estimators, max_samples=max_samples)
    t0 = time.perf_counter()
    stats = d.fit(_signal(4000, 0))
    fit_s = time.perf_counter() - t0  # includes kernel compile / cache load on first use

    values = _signal(rows, 1)
    X = shape_features(values, window)
    d.score_features(X[:1000])  # warm-up (any lazy compile)
    d.score_many(values[:1000])

    def best_median(fn) -> tuple[float, float]:
        ts = []
        for _ in range(rounds):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts), float(np.median(ts))

    feat_best, feat_med = best_median(lambda: d.score_features(X))
    many_best, many_med = best_median(lambda: d.score_many(values))

    xs = values[:single]
    lat = np.empty(single)
    pc = time.perf_counter_ns
    for i in range(single):
        t = pc()
        d.score_one(float(xs[i]))
        lat[i] = pc() - t
    lat /= 1000.0
    return {
        "n_estimators": n_estimators,
        "max_samples": max_samples,
        "n_nodes": stats["n_nodes"],
        "rows": rows,
        "fit_seconds": round(fit_s, 3),
        "single_p50_us": round(float(np.percentile(lat, 50)), 2),
        "single_p99_us": round(float(np.percentile(lat, 99)), 2),
        "batch_features_samples_per_s": round(rows / feat_best),
        "batch_features_samples_per_s_median": round(rows / feat_med),
        "batch_many_samples_per_s": round(rows / many_best),
        "batch_many_samples_per_s_median": round(rows / many_med),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--single", type=int, default=20_000)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--json", action="store_true", help="print the result dict as JSON")
    args = ap.parse_args(argv)
    r = measure(rows=args.rows, rounds=args.rounds, single=args.single, n_estimators=args.trees)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"forest: {r['n_estimators']} trees, max_samples {r['max_samples']}, {r['n_nodes']} nodes; fit {r['fit_seconds']} s")
    print(f"single reading (score_one): p50 {r['single_p50_us']} us, p99 {r['single_p99_us']} us")
    print(
        f"batch {r['rows']} rows, score_features: {r['batch_features_samples_per_s'] / 1e6:.2f} M samples/s "
        f"(median {r['batch_features_samples_per_s_median'] / 1e6:.2f})"
    )
    print(
        f"batch {r['rows']} rows, score_many:     {r['batch_many_samples_per_s'] / 1e6:.2f} M samples/s "
        f"(median {r['batch_many_samples_per_s_median'] / 1e6:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
