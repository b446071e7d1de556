"""The simulator's injected faults against the alarms SCADA receives, at ``make demo``'s settings.

A real mosquitto, the agent with its default detector (``min_train_samples`` 200, as the demo),
``edge-agent simulate`` (3 machines x 3 sensors at 20 Hz, a 300 s "day", 120 faults per sensor
per hour after a 30 s warm-up) and a SCADA-side subscriber. A fault counts as caught when its
series raised an alarm within its span (spike: the reading; level shift and stuck: 30 s) plus
2 s, or was still in alarm from an earlier fault; every other raise is counted as a nuisance.
Not part of ``make bench``; docs/detectors.md quotes it::

    .venv/bin/python -m bench.simulator_faults --seconds 300 --seed 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from bench.common import REPO, AgentProcess, Mosquitto, agent_config, workdir

_h = sys.modules["edge_agent_test_helpers"]
SPAN_S = {"spike": 0.0, "level_shift": 30.0, "stuck": 30.0}


def run(seconds: float, seed: int) -> dict[str, Any]:
    tmp = workdir(f"simulator-faults-{seed}")
    broker = Mosquitto(tmp / "broker").start()
    agent = AgentProcess(tmp, agent_config(tmp, broker, **{"detector": {"min_train_samples": 200}})).start()
    try:
        agent.wait_connected()
        scada = _h.Subscriber(broker, "edge/gw-test/alerts/#")
        sim = subprocess.run(
            [sys.executable, "-m", "edge_agent", "simulate", "--broker", broker.address, "--machines", "3", "--rate", "20",
             "--duration", str(seconds), "--warmup", "30", "--fault-rate", "120", "--day-seconds", "300", "--seed", str(seed)],
            capture_output=True, text=True, cwd=REPO, check=True,
        )
        time.sleep(3.0)  # the last alarms on their way
        alarms = scada.json()
        scada.close()
    finally:
        agent.stop()
        broker.stop()
    events = [json.loads(line) for line in sim.stdout.splitlines()]
    faults = [e for e in events if e["event"] == "fault"]
    raised = [a for a in alarms if a["state"] == "raised"]
    first = min((f["ts"] for f in faults), default=float("inf"))
    caught: dict[str, list[int]] = {k: [0, 0] for k in SPAN_S}
    used: set[str] = set()
    missed = []
    for f in faults:
        caught[f["fault"]][1] += 1
        hits = [a for a in raised if a["series"] == f["series"] and f["ts"] - 0.01 <= a["ts"] <= f["ts"] + SPAN_S[f["fault"]] + 2.0]
        held = any(a["series"] == f["series"] and a["ts"] < f["ts"]
                   and not any(c["series"] == f["series"] and c["state"] != "raised" and a["ts"] < c["ts"] < f["ts"] for c in alarms)
                   for a in raised)
        used.update(a["alert_id"] for a in hits)
        if hits or held:
            caught[f["fault"]][0] += 1
        else:
            missed.append(f)
    kinds: dict[str, int] = {}
    for a in raised:
        kinds[str(a.get("kind"))] = kinds.get(str(a.get("kind")), 0) + 1
    return {
        "seed": seed, "seconds": seconds, "readings": events[-1]["published"], "faults": len(faults),
        "caught": {k: {"caught": c, "injected": n} for k, (c, n) in caught.items()},
        "raised": len(raised), "raised_before_first_fault": sum(1 for a in raised if a["ts"] < first),
        "raised_away_from_faults": sum(1 for a in raised if a["alert_id"] not in used),
        "away_from_faults": [(a["series"], a.get("message")) for a in raised if a["alert_id"] not in used][:20],
        "missed": missed, "explained_as": kinds,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(json.dumps(run(args.seconds, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
