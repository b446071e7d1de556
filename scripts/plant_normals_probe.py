"""Normal plant behaviours that no evaluation set has: how many alarms does ``robust`` raise?

Not part of the suite (docs/detectors.md, "Status and mode signals, and a window that never
moved", session 10). Every signal here is fault-free, so every raise is a nuisance alarm
(or, for a few, a judgement call the section discusses). Per behaviour and seed: a 500-reading
fit, then the rest through ``Pipeline`` as live (one reading a minute unless said):

* ``status``: a 0 / 1 run status, each state held an exponential ~200 readings;
* ``idle_start``: one value for 700 readings (a machine idle while the agent starts), then
  white noise at another level;
* ``thermostat``: a relaxation cycle between two switching points;
* ``sawtooth``: a tank filling over 100-300 readings and draining over 10-30;
* ``setpoints``: three setpoints with noise, each held ~300 readings;
* ``shifts``: three production shifts a day, each with its own load (70, 55, 30), by the
  reading's time of day (session 13);
* ``weekly``: a load of 60 on weekdays and 40 at weekends, each change ramped over two hours,
  on a daily swing of 5 (session 13; the 12,500 readings hold one weekend);
* ``heavy_tails``: Student-t (3 degrees of freedom) noise;
* ``counter``: a totaliser (Poisson increments);
* ``gaps``: the suite's normal signals (``evaluation/scenarios.py``) at one reading a second, a
  minute and five minutes, with two gaps of 1 and 8 hours in their timestamps (a sensor
  offline; the signal moved on meanwhile).

``--accept-after N``: an operator accepts every alarm with ``rebaseline`` N readings after it
was raised (a new setpoint confirmed), as the docs tell them to; without it nothing is accepted.

``--long N``: instead, Student-t noise (3 and 5 degrees of freedom, or ``--dfs``) over ``N``
readings a seed, the raises counted per tenth of the run, and at the end the spike threshold and
the shape its tail learned: does the live tail learn a heavy tail in a long run
(docs/detectors.md, "Heavy-tailed noise over a long run" and "A spike tail that learns its own
shape", session 11)?

    PYTHONPATH=. .venv/bin/python scripts/plant_normals_probe.py [--seeds 0,1,2,3] [--only status,gaps]
    PYTHONPATH=. .venv/bin/python scripts/plant_normals_probe.py --only setpoints --accept-after 30
    PYTHONPATH=. .venv/bin/python scripts/plant_normals_probe.py --long 100000 [--dfs 3,4,5]
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np

from edge_agent import alarm_decision
from edge_agent.config import AgentConfig
from edge_agent.evaluation import scenarios as S
from edge_agent.pipeline import InlineTrainer, Pipeline

N = 12_500
T0 = 1.7e9


def status(rng: np.random.Generator) -> np.ndarray:
    x = np.empty(N)
    i, s = 0, 0.0
    while i < N:
        d = int(rng.exponential(200)) + 2
        x[i:i + d] = s
        i, s = i + d, 1.0 - s
    return x


def idle_start(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([np.full(700, 21.0), 50.0 + rng.normal(0.0, 0.5, N - 700)])


def thermostat(rng: np.random.Generator) -> np.ndarray:
    x, t, on = np.empty(N), 5.0, False
    for i in range(N):
        t += (-0.15 if on else 0.05) + rng.normal(0.0, 0.02)
        on = True if t > 6.0 else False if t < 4.0 else on
        x[i] = t
    return x


def sawtooth(rng: np.random.Generator) -> np.ndarray:
    parts: list[np.ndarray] = []
    while sum(p.size for p in parts) < N:
        parts += [np.linspace(20, 80, int(rng.uniform(100, 300))), np.linspace(80, 20, int(rng.uniform(10, 30)))]
    return np.concatenate(parts)[:N] + rng.normal(0.0, 0.3, N)


def setpoints(rng: np.random.Generator) -> np.ndarray:
    x, i = np.empty(N), 0
    while i < N:
        d = int(rng.exponential(300)) + 20
        x[i:i + d] = rng.choice([30.0, 45.0, 60.0])
        i += d
    return x + rng.normal(0.0, 0.2, N)


def shifts(rng: np.random.Generator) -> np.ndarray:
    t = T0 + 60.0 * np.arange(N)
    return np.array([70.0, 55.0, 30.0])[((t % 86400) // 28800).astype(int)] + rng.normal(0.0, 0.5, N)


def weekly(rng: np.random.Generator) -> np.ndarray:
    t = T0 + 60.0 * np.arange(N)
    weekend = (((t // 86400) + 3) % 7 >= 5).astype(float)  # (day 0 of the epoch was a Thursday)
    ramp = np.convolve(weekend, np.ones(120) / 120, mode="same")
    return 60.0 - 20.0 * ramp + 5.0 * np.sin(2 * np.pi * t / 86400) + rng.normal(0.0, 0.5, N)


def heavy_tails(rng: np.random.Generator) -> np.ndarray:
    return 50.0 + 0.5 * rng.standard_t(3, N)


def counter(rng: np.random.Generator) -> np.ndarray:
    return np.cumsum(rng.poisson(3, N)).astype(float)


SIGNALS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "status": status, "idle_start": idle_start, "thermostat": thermostat, "sawtooth": sawtooth,
    "setpoints": setpoints, "shifts": shifts, "weekly": weekly, "heavy_tails": heavy_tails, "counter": counter,
}


def gapped(seed: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """The suite's normal kinds with two gaps (1 and 8 hours) in their timestamps."""
    for kind in ("noise", "trend", "cycle", "wander", "quantised"):
        for dt in (1.0, 60.0, 300.0):
            for hours in (1.0, 8.0):
                rng = np.random.default_rng([seed, 31, S.NORMAL_KINDS.index(kind), int(dt), int(hours)])
                x, _ = S.normal_signal(kind, 6000, 0.5, dt, rng)
                ts = T0 + np.arange(6000) * dt
                keep = np.ones(6000, dtype=bool)
                g = int(hours * 3600 / dt)
                keep[2000:2000 + g] = keep[4000:4000 + g] = False
                yield f"gaps/{kind}/dt{dt:g}/{hours:g}h", x[keep], ts[keep]


def raised(x: np.ndarray, ts: np.ndarray, accept_after: int = 0) -> list[tuple[str, str]]:
    """The raises over x; with ``accept_after``, each alarm still raised that many readings
    after its raise is accepted by a ``rebaseline``, as an operator would."""
    cfg = AgentConfig.model_validate({"detector": {"name": "robust"}, "alarms": {"accept_after_s": None}})
    events: list = []
    pipe = Pipeline(cfg, InlineTrainer(), events.append)
    raised_at = -1
    for i, (v, t) in enumerate(zip(x.tolist(), ts.tolist(), strict=True)):
        n = len(events)
        pipe.process("s", v, t)
        for e in events[n:]:
            raised_at = i if e.state == "raised" else -1
        if accept_after and raised_at >= 0 and i - raised_at == accept_after:
            alarm_decision.rebaseline(pipe, "s", by="the operator")
            raised_at = -1
    return [(e.kind, e.message or "") for e in events if e.state == "raised"]


def long_tails(seeds: list[int], n: int, dfs: tuple[int, ...] = (3, 5)) -> None:
    """Raises on Student-t noise over ``n`` readings a seed, per tenth of the run, and the spike
    channel's threshold at the end (in noise scales) and the shape its tail uses, per seed."""
    from edge_agent.detectors.robust import SPIKE

    for df in dfs:
        tenths, thresholds = np.zeros(10, dtype=int), []
        for seed in seeds:
            x = 50.0 + 0.5 * np.random.default_rng([seed, df, 99]).standard_t(df, n)
            cfg = AgentConfig.model_validate({"detector": {"name": "robust"}, "alarms": {"accept_after_s": None}})
            events: list = []
            pipe = Pipeline(cfg, InlineTrainer(), events.append)
            for i, v in enumerate(x.tolist()):
                pipe.process("s", v, T0 + 60.0 * i)
            for e in events:
                if e.state == "raised":
                    tenths[min(9, int((e.ts - T0) / 60.0) * 10 // n)] += 1
            d = pipe.series["s"].model.detector
            thresholds.append(f"{d.thr[SPIKE]:.1f} (shape {getattr(d, 'sh_xi', 0.0):.2f})")
        print(f"student-t({df}) raises per tenth of {n:,} readings over {len(seeds)} seeds: {tenths.tolist()} "
              f"(total {tenths.sum()}); the spike threshold at the end {', '.join(thresholds)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--only", default=None, help="comma-separated behaviours (status, ..., gaps)")
    ap.add_argument("--accept-after", type=int, default=0, metavar="N",
                    help="an operator accepts each alarm (rebaseline) N readings after its raise")
    ap.add_argument("--long", type=int, default=0, metavar="N", help="instead: Student-t noise over N readings a seed")
    ap.add_argument("--dfs", default="3,5", help="--long: the degrees of freedom")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.long:
        long_tails(seeds, args.long, tuple(int(v) for v in args.dfs.split(",")))
        return
    only = set(args.only.split(",")) if args.only else None
    for name, make in SIGNALS.items():
        if only and name not in only:
            continue
        kinds: Counter[str] = Counter()
        first = ""
        for seed in seeds:
            x = make(np.random.default_rng([seed, 7]))
            for kind, message in raised(x, T0 + np.arange(x.size) * 60.0, args.accept_after):
                kinds[kind] += 1
                first = first or message[:110]
        print(f"{name:12s} raises {sum(kinds.values()):3d} over {len(seeds)} x {N:,} readings {dict(kinds)} {first}")
    if only is None or "gaps" in only:
        kinds, worst = Counter(), Counter()
        for seed in seeds:
            for name, x, ts in gapped(seed):
                for kind, _ in raised(x, ts, args.accept_after):
                    kinds[kind] += 1
                    worst[name.rsplit("/", 2)[0] + "/" + name.rsplit("/", 1)[1]] += 1
        print(f"{'gaps':12s} raises {sum(kinds.values()):3d} over {len(seeds)} x 30 signals with two gaps each {dict(kinds)} {dict(worst.most_common(4))}")


if __name__ == "__main__":
    main()
