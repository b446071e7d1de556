"""Event-loop time of one ``POST /predict``, by body size: handled on the loop, or handed to
the side-work process. Chooses ``edge_agent.http.predict.OFFLOAD_BYTES``.

On the loop, the whole request is ``predict.answer`` (parse, validate, score, JSON answer):
timed directly here. Through the worker, the loop's share is copying the detector and the
body into the pipe and the answer out of it (pickle both ways, what ProcessPoolExecutor does
on the loop thread and its manager thread): timed here as dumps + loads of those objects with
the pickler multiprocessing itself uses (our own objects in memory; nothing read from outside).
Socket I/O (the same either way) is left out.

Run alone: ``python -m bench.http_predict_loop`` prints a JSON table.
"""

from __future__ import annotations

import copy
import json
import time
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np

from edge_agent import detectors
from edge_agent.http import predict

SIZES = (10, 100, 300, 1000, 3000, 10_000, 100_000)


def _best(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    det = detectors.create("adaptive", {})
    det.fit(rng.normal(size=4096))
    rows = []
    for n in SIZES:
        raw = json.dumps({"values": [round(float(v), 4) for v in rng.normal(size=n)]}).encode()
        repeat = 20 if n <= 10_000 else 3
        on_loop = _best(lambda: predict.answer(raw, copy.deepcopy(det), "m1/temp", 1), repeat)  # noqa: B023
        out = predict.answer(raw, copy.deepcopy(det), "m1/temp", 1)

        def hop() -> None:
            ForkingPickler.loads(ForkingPickler.dumps((raw, copy.deepcopy(det), "m1/temp", 1)))  # noqa: B023
            ForkingPickler.loads(ForkingPickler.dumps(("ok", out)))  # noqa: B023

        rows.append({"values": n, "body_bytes": len(raw), "on_loop_ms": round(on_loop * 1e3, 3), "offloaded_loop_ms": round(_best(hop, repeat) * 1e3, 3)})
    return rows


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
