"""Part 6, start-up: process start to /readyz 200 with 1,000 (and 0, 10,000) models on disk."""

from __future__ import annotations

import time
from typing import Any

from bench.common import BenchAgent, make_models, start_broker, summary, workdir


def _startups(broker: Any, n_models: int, runs: int) -> dict[str, Any]:
    tmp = workdir(f"startup-{n_models}")
    make_s = make_models(tmp / "state", n_models) if n_models else 0.0
    times, loaded_lines = [], []
    for r in range(runs):
        agent = BenchAgent(tmp, broker, name=f"agent{r}")
        t0 = time.monotonic()
        agent.start()
        try:
            t_ready = agent.wait_ready(timeout=60, interval=0.005)
            times.append(t_ready - t0)
            loaded_lines.append(next((ln for ln in agent.log().splitlines() if "loaded" in ln and "model(s)" in ln), ""))
        finally:
            agent.stop()
    return {
        "models": n_models,
        "create_models_s": make_s,
        "runs": runs,
        "start_to_ready_s": summary(times, 1.0, "s"),
        "log_line": loaded_lines[-1][-120:] if loaded_lines else "",
    }


def run(quick: bool = False) -> dict[str, Any]:
    broker = start_broker("broker-startup")
    try:
        runs = 2 if quick else 3
        out = {"method": "Popen of `python -m edge_agent run` to the first 200 from GET /readyz (polled every 5 ms); "
                         "ready = broker connected and all models loaded"}
        out["by_models"] = [_startups(broker, n, runs) for n in ((0, 1000) if quick else (0, 1000, 10_000))]
        return out
    finally:
        broker.stop()


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=1))
