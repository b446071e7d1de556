"""Quantisations the fault-scenario suite does not have: are a quantised signal's spikes caught,
and its fault-free readings left alone, when the quantum is not the suite's twice the noise?

Not part of the suite (docs/detectors.md, "A quantised signal's spike scale", session 8): the
suite's ``quantised`` normal is a wander rounded to 2 x its noise. Here the same wander (noise
0.5, one reading every 1, 60 and 300 s) is rounded to ``k`` x its noise for each ``--quanta``
k: per k and interval, ``--repeats`` spike scenarios (the suite's three identical spikes of 10 u, u from
the rounded training window) and as many fault-free ones of 12,000 readings, each trained on
500 readings. A spike is caught as the suite catches it; any other raise is a nuisance alarm.

    PYTHONPATH=. .venv/bin/python scripts/quantum_probe.py [--seed 11] [--quanta 1,2,3,4,8] [--repeats 4] [--jobs 2]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from edge_agent.evaluation import scenarios as S

CFG = {"detector": {"name": "robust"}}
SIGMA = 0.5
TRAIN = 500
CLEAN = 12000


def rounded_wander(n: int, dt: float, k: float, rng: np.random.Generator) -> np.ndarray:
    x, _ = S.normal_signal("wander", n, SIGMA, dt, rng)
    q = k * SIGMA
    return np.round(x / q) * q


def probe_suite(seed: int, quanta: list[float], repeats: int) -> list[S.Scenario]:
    out = []
    for j, k in enumerate(quanta):
        for dt, r in ((dt, r) for dt in (1.0, 60.0, 300.0) for r in range(repeats)):
            rng = np.random.default_rng([seed, 98, j, int(dt), r])
            n = TRAIN + 3000
            x = rounded_wander(n, dt, k, rng)
            u = S.noise_over(x[:TRAIN], 1) or 1.0
            first = TRAIN + int(rng.integers(300, 500))
            faults = [S.Fault("spike", first + g, first + g) for g in S.SPIKE_GAPS]
            for f in faults:
                S.inject(x, f, u, u, rng)
            ts = 1.7e9 + np.arange(n) * dt
            out.append(S.Scenario(f"q{k:g}/spike/dt{dt:g}/r{r}", "quantised", SIGMA, dt, x, ts, faults))
            x = rounded_wander(TRAIN + CLEAN, dt, k, rng)
            ts = 1.7e9 + np.arange(TRAIN + CLEAN) * dt
            out.append(S.Scenario(f"q{k:g}/clean/dt{dt:g}/r{r}", "quantised", SIGMA, dt, x, ts))
    return out


def run_one(sc: S.Scenario) -> tuple[str, int, int, int]:
    outcomes, nuisance = S.assess(S.run_scenario(sc, CFG))
    return sc.name, sum(o.caught for o in outcomes), len(outcomes), len(nuisance)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--quanta", default="1,2,3,4,8", help="quanta in noise widths, comma-separated")
    ap.add_argument("--repeats", type=int, default=4, help="scenarios of each kind per quantum and interval")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    quanta = [float(v) for v in args.quanta.split(",")]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_one, probe_suite(args.seed, quanta, args.repeats)))
    per: dict[str, list[int]] = {}
    for name, caught, n, nuis in results:
        if caught < n or nuis:
            print(f"  {name:24s} caught={caught}/{n} nuisance={nuis}")
        t = per.setdefault(name.split("/")[0], [0, 0, 0])
        t[0] += caught
        t[1] += n
        t[2] += nuis
    print(f"quantum probe (seed {args.seed}): " + " | ".join(f"{q}: caught {c}/{n}, nuisance {m}" for q, (c, n, m) in per.items()))


if __name__ == "__main__":
    main()
