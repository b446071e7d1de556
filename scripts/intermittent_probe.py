"""Chatter on the unseen set's intermittent faults, and what the suite's spike alarms cost.

Per intermittent fault (``unseen_faults.py``: glitches of 6 u on 10 % of 300 readings) the raises
within the fault and its grace, whether the first alarm is held to the fault's end, and the
readings from its end to the clear; the same for the hunting oscillation; and per spike of the
suite (three per series, 700 and 1,500 readings apart) the raises and the readings from the spike
to its alarm's clear (a lone spike's alarm should clear ~10 readings after it). Reading only.

    PYTHONPATH=. .venv/bin/python scripts/intermittent_probe.py [--seed 0] [--jobs 2]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from edge_agent.evaluation import scenarios, unseen_faults
from edge_agent.evaluation.scenarios import GRACE, run_scenario

CFG = {"gateway_id": "probe", "detector": {"name": "robust"}}


def _run(sc: Any) -> tuple[str, list[Any], list[int], list[tuple[int, str]]]:
    r = run_scenario(sc, CFG)
    return sc.name, r.faults, r.raised, r.ended


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    unseen = [s for s in unseen_faults.build_suite(seed=a.seed) if "/intermittent/" in s.name or "/oscillation/" in s.name]
    spikes = [s for s in scenarios.build_suite("full", seed=a.seed) if "/spike/" in s.name]
    with ProcessPoolExecutor(a.jobs) as pool:
        res = list(pool.map(_run, unseen + spikes, chunksize=4))
    lasting: dict[str, list[tuple[int, bool, int | None]]] = {"intermittent": [], "oscillation": []}
    spk: list[tuple[int, int | None]] = []
    for _, faults, raised, ended in res:
        for f in faults:
            rs = [i for i in raised if f.start <= i <= f.end + GRACE]
            end = None if not rs else next((i for i, _ in ended if i > rs[0]), None)
            if f.kind == "spike":
                spk.append((len(rs), None if end is None else end - f.start))
            else:
                held = bool(rs) and (end is None or end > f.end)
                lasting[f.kind].append((len(rs), held, None if end is None else end - f.end))
    for kind, recs in lasting.items():
        raises = [n for n, _, _ in recs]
        clears = [c for _, h, c in recs if h and c is not None]
        cleared = f"p50 {np.median(clears):.0f} p90 {np.percentile(clears, 90):.0f}" if clears else "(none cleared)"
        print(f"seed {a.seed} {kind}: {len(recs)} faults, {sum(raises)} raises, one alarm {sum(1 for n in raises if n == 1)}, "
              f"first alarm held {sum(1 for _, h, _ in recs if h)}, held ones cleared {cleared} readings after the end")
    c = [x for _, x in spk if x is not None]
    cleared = f"p50 {np.median(c):.0f} p90 {np.percentile(c, 90):.0f} max {max(c)}" if c else "(none cleared)"
    print(f"seed {a.seed} suite spikes: {len(spk)}, caught {sum(1 for n, _ in spk if n)}, more than one raise {sum(1 for n, _ in spk if n > 1)}, "
          f"cleared {cleared} readings after the spike, over 20: {sum(1 for x in c if x > 20)}")


if __name__ == "__main__":
    main()
