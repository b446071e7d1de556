"""Slow ramps the fault-scenario suite does not have: does the default detector catch a drift
that grows more slowly than its statistics learn (the "boiling frog")?

Not part of the suite (docs/detectors.md, "The boiling frog", session 6): 30 scenarios, each a
normal signal of the suite's kinds (noise, wander, quantised, cycle, trend; noise 0.5, one
reading every 1, 60 and 300 s), trained on 500 readings, then a ramp of 0.03 U a reading over
1,500 readings or 0.01 U over 3,000 (U as the suite sizes it: the signal's random part over 300
readings), starting 300-500 readings after the training window, then 600 readings back at
normal. A ramp is caught when an alarm is raised while it lasts.

    PYTHONPATH=. .venv/bin/python scripts/slow_ramp_probe.py [--seed 7] [--jobs 2]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from edge_agent.evaluation import scenarios as S

CFG = {"detector": {"name": "robust"}}
RAMPS = ((0.03, 1500), (0.01, 3000))  # (U per reading, readings)


def probe_suite(seed: int = 7) -> list[S.Scenario]:
    out = []
    k = 0
    for kind in ("noise", "wander", "quantised", "cycle", "trend"):
        for dt in (1.0, 60.0, 300.0):
            for rate, length in RAMPS:
                rng = np.random.default_rng([seed, 99, k])
                k += 1
                n = 500 + 400 + length + 600
                x, _, _, big_u, first = S.faulty_signal(kind, 0.5, dt, 500, n - 500, rng)
                end = first + length
                sign = rng.choice([-1.0, 1.0])
                x[first:end] += sign * rate * big_u * np.arange(1, length + 1)
                ts = 1.7e9 + np.arange(n) * dt
                out.append(S.Scenario(f"{kind}/ramp{rate:g}/dt{dt:g}/L{length}", kind, 0.5, dt, x, ts,
                                      [S.Fault("drift", first, end - 1)]))
    return out


def run_one(sc: S.Scenario) -> tuple[str, S.FaultOutcome, int]:
    outcomes, nuisance = S.assess(S.run_scenario(sc, CFG))
    return sc.name, outcomes[0], len(nuisance)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_one, probe_suite(args.seed)))
    caught = held = nuisance = 0
    for name, o, n in results:
        caught += o.caught
        held += bool(o.held)
        nuisance += n
        print(f"  {name:32s} caught={int(o.caught)} delay={o.delay} held={o.held} other alarms={n}")
    print(f"slow ramps (seed {args.seed}): caught {caught}/{len(results)}, held {held}, other alarms {nuisance}")


if __name__ == "__main__":
    main()
