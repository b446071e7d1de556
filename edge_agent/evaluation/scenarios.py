"""A fault-scenario suite: generated signals with known faults, streamed through the live path.

The design tool for what the agent alarms on. Each scenario is one series: a *normal* signal
of one kind, at one noise level, length and sampling interval, seeded, with zero or more
injected faults whose first and last readings are known. It is streamed reading by reading
through ``Pipeline.process`` (inline fit on the first ``min_train_samples`` readings, the
same alarm state machine as live), and scored on what an operator wants:

* **nuisance alarms**: alarms raised on fault-free signals (and, on faulty ones, outside
  every fault's span), per 1,000 fault-free scored readings;
* **caught**: a spike is caught when an alarm is raised between its reading and ``GRACE``
  readings after it; a sustained fault, when one is raised between its first reading and its
  last (a raise in the ``GRACE`` readings after it is no nuisance alarm, but it answers the
  fault's *end*, the jump back to normal, and catches nothing); **delay** counts readings from
  the fault's first reading;
* **held**: a sustained fault (step, drift, noise burst, stuck) is held when the alarm that
  caught it stays raised, without clearing, up to the fault's last reading;
* **cleared after**: readings from a sustained fault's last reading to the alarm's clear.

Normal kinds (what must raise no alarm): white ``noise`` around a level, a slow linear
``trend``, a daily ``cycle`` (period one day in the readings' own timestamps, so the sampling
interval decides how many readings a cycle spans), a mean-reverting ``wander`` (an AR(1)
level with a one-hour time constant), and a ``quantised`` signal (a wander rounded to a
quantum of twice the noise, so most readings repeat one of two or three values).

Fault kinds, each sized against the series' own variability, so that a fault is as visible
on a wandering signal as on a still one: three identical ``spike``s of 10 ``u`` (each must
raise its own alarm), a ``step`` of 5 ``U`` that lasts and then returns, a ``drift`` that is
fast for the series (a ramp of 0.1 ``U`` per reading), a ``noise`` burst (4 x), and a
``stuck`` sensor that repeats its last value. ``u`` is the one-step noise: the standard
deviation of the fault-free signal's first differences over the training window, over
sqrt 2. ``U`` is the same over the length of a sustained fault (300 readings), of the signal's
random part (its cycle or trend taken out), and at least ``u``: on white noise ``U = u``,
while a level that wanders by several noise widths within 300 readings needs a step larger
than its wander to be a fault at all.

Everything is generated from a seed: the suite is deterministic.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NORMAL_KINDS = ("noise", "trend", "cycle", "wander", "quantised")
FAULT_KINDS = ("spike", "step", "drift", "noise", "stuck")
DAY_S = 86400.0
GRACE = 20  # readings after a fault's last one in which a raise is no nuisance (and catches a spike)

# Fault sizes, in units of the series' one-step noise u (see the module docstring).
SPIKE_U = 10.0
STEP_U = 5.0
DRIFT_U_PER_READING = 0.1  # a ramp reaching 30 u over a 300-reading fault
NOISE_FACTOR = 4.0
SUSTAINED_READINGS = 300
SPIKE_GAPS = (0, 700, 1500)  # three identical spikes, this many readings after the first


@dataclass(frozen=True)
class Fault:
    kind: str
    start: int  # index of the first faulty reading
    end: int  # index of the last faulty reading (inclusive)


@dataclass
class Scenario:
    name: str
    normal: str
    sigma: float
    dt: float
    values: np.ndarray
    ts: np.ndarray
    faults: list[Fault] = field(default_factory=list)


@dataclass
class ScenarioResult:
    name: str
    normal: str
    readings: int
    scored: int
    faults: list[Fault]
    raised: list[int]  # reading indices
    ended: list[tuple[int, str]]  # (index, "cleared" | "accepted")
    kinds: list[str | None]  # the explanation's kind at each raise
    seconds: float


# ---- generating ----------------------------------------------------------------------------
def normal_signal(kind: str, n: int, sigma: float, dt: float, rng: np.random.Generator, level: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """A fault-free signal of one kind, n readings dt seconds apart with measurement noise
    sigma, and its deterministic part (level, trend or cycle)."""
    t = np.arange(n) * dt
    noise = rng.normal(0.0, sigma, n)
    if kind == "noise":
        return level + noise, np.full(n, level)
    if kind == "trend":
        # Slow: 2 % of the noise per reading at most (5 noise sigmas over 250 readings).
        slope = sigma * rng.uniform(0.002, 0.02) * rng.choice([-1.0, 1.0])
        det = level + slope * np.arange(n)
        return det + noise, det
    if kind == "cycle":
        amp = sigma * rng.uniform(5.0, 20.0)
        det = level + amp * np.sin(2 * math.pi * t / DAY_S + rng.uniform(0, 2 * math.pi))
        return det + noise, det
    if kind in ("wander", "quantised"):
        tau = 3600.0
        phi = math.exp(-dt / tau)
        sd = 3.0 * sigma  # stationary spread of the wandering level
        w = np.empty(n)
        w[0] = rng.normal(0.0, sd)
        innov = rng.normal(0.0, sd * math.sqrt(1.0 - phi * phi), n)
        for i in range(1, n):
            w[i] = phi * w[i - 1] + innov[i]
        x = level + w + noise
        if kind == "quantised":
            q = 2.0 * sigma
            x = np.round(x / q) * q
        return x, np.full(n, level)
    raise ValueError(f"unknown normal kind {kind!r}")


def noise_over(x: np.ndarray, lag: int) -> float:
    """Standard deviation of x[t + lag] - x[t], over sqrt 2 (the noise seen over lag readings)."""
    if x.shape[0] <= lag:
        return 0.0
    return float(np.std(x[lag:] - x[:-lag])) / math.sqrt(2.0)


def inject(x: np.ndarray, fault: Fault, u: float, big_u: float, rng: np.random.Generator) -> None:
    """Apply one fault to x in place (u: one-step noise; big_u: noise over a sustained fault)."""
    s, e = fault.start, fault.end + 1
    sign = rng.choice([-1.0, 1.0])
    if fault.kind == "spike":
        x[s] += sign * SPIKE_U * u
    elif fault.kind == "step":
        x[s:e] += sign * STEP_U * big_u
    elif fault.kind == "drift":
        x[s:e] += sign * DRIFT_U_PER_READING * big_u * np.arange(1, e - s + 1)
    elif fault.kind == "noise":
        x[s:e] += rng.normal(0.0, u * math.sqrt(NOISE_FACTOR**2 - 1.0), e - s)
    elif fault.kind == "stuck":
        x[s:e] = x[s - 1]
    else:
        raise ValueError(f"unknown fault kind {fault.kind!r}")


@dataclass(frozen=True)
class SuiteSize:
    sigmas: tuple[float, ...]
    dts: tuple[float, ...]
    clean_lengths: tuple[int, ...]
    fault_length: int
    seeds: int


SIZES = {
    # >= 200,000 fault-free scored readings; every fault kind on every normal kind.
    "full": SuiteSize(sigmas=(0.05, 0.5, 5.0), dts=(1.0, 60.0, 300.0), clean_lengths=(3000, 12000), fault_length=3000, seeds=2),
    # the test suite's: every normal and fault kind once per sampling interval, a few seconds
    "small": SuiteSize(sigmas=(0.5,), dts=(1.0, 300.0), clean_lengths=(4000,), fault_length=2600, seeds=1),
}


def faulty_signal(kind: str, sigma: float, dt: float, train: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, float, int]:
    """A normal signal of ``train + length`` readings to inject a fault into, and what the fault
    is sized and placed by: (values, their deterministic part, u, U, the first faulty reading,
    300-500 readings after the training window)."""
    x, det = normal_signal(kind, train + length, sigma, dt, rng)
    u = noise_over(x[:train], 1) or 1.0
    big_u = max(u, noise_over(x - det, SUSTAINED_READINGS))
    return x, det, u, big_u, train + int(rng.integers(300, 500))


def grid(spec: SuiteSize) -> Iterator[tuple[int, str, float, float]]:
    """(repeat, normal kind, noise, sampling interval) of every scenario group, in the suite's order."""
    for rep in range(spec.seeds):
        for kind in NORMAL_KINDS:
            for sigma in spec.sigmas:
                for dt in spec.dts:
                    yield rep, kind, sigma, dt


def build_suite(size: str = "full", train: int = 500, seed: int = 0) -> list[Scenario]:
    spec = SIZES[size]
    out: list[Scenario] = []
    k = 0
    for rep, kind, sigma, dt in grid(spec):
        for n in spec.clean_lengths:
            rng = np.random.default_rng([seed, rep, k])
            k += 1
            x, _ = normal_signal(kind, train + n, sigma, dt, rng)
            ts = 1.7e9 + np.arange(train + n) * dt
            out.append(Scenario(f"{kind}/clean/s{sigma:g}/dt{dt:g}/n{n}/r{rep}", kind, sigma, dt, x, ts))
        for fk in FAULT_KINDS:
            rng = np.random.default_rng([seed, rep, k])
            k += 1
            n = train + spec.fault_length
            x, _, u, big_u, first = faulty_signal(kind, sigma, dt, train, spec.fault_length, rng)
            if fk == "spike":
                faults = [Fault("spike", first + g, first + g) for g in SPIKE_GAPS]
            else:
                faults = [Fault(fk, first, first + SUSTAINED_READINGS - 1)]
            for f in faults:
                inject(x, f, u, big_u, rng)
            ts = 1.7e9 + np.arange(n) * dt
            out.append(Scenario(f"{kind}/{fk}/s{sigma:g}/dt{dt:g}/r{rep}", kind, sigma, dt, x, ts, faults))
    return out


# ---- running -------------------------------------------------------------------------------
def run_scenario(sc: Scenario, cfg_data: dict[str, Any]) -> ScenarioResult:
    from edge_agent.config import AgentConfig
    from edge_agent.pipeline import InlineTrainer, Pipeline

    cfg = AgentConfig.model_validate(cfg_data)
    events: list[Any] = []
    pipe = Pipeline(cfg, trainer=InlineTrainer(), on_alarm=events.append, store=None)
    raised: list[int] = []
    ended: list[tuple[int, str]] = []
    kinds: list[str | None] = []
    process = pipe.process
    values = sc.values.tolist()
    ts = sc.ts.tolist()
    t0 = time.perf_counter()
    for i in range(len(values)):
        n = len(events)
        process(sc.name, values[i], ts[i])
        if len(events) != n:
            for ev in events[n:]:
                if ev.state == "raised":
                    raised.append(i)
                    kinds.append(ev.kind)
                else:
                    ended.append((i, ev.state))
    seconds = time.perf_counter() - t0
    s = pipe.series[sc.name]
    return ScenarioResult(sc.name, sc.normal, len(values), s.n_scored, sc.faults, raised, ended, kinds, seconds)


def _run_chunk(chunk: list[Scenario], cfg_data: dict[str, Any]) -> list[ScenarioResult]:
    return [run_scenario(sc, cfg_data) for sc in chunk]


def run_suite(scenarios: list[Scenario], cfg_data: dict[str, Any], jobs: int = 1, progress: bool = False) -> list[ScenarioResult]:
    if jobs <= 1:
        out = []
        for i, sc in enumerate(scenarios):
            out.append(run_scenario(sc, cfg_data))
            if progress and (i + 1) % 50 == 0:
                print(f"[{i + 1}/{len(scenarios)}] scenarios", file=sys.stderr, flush=True)
        return out
    from concurrent.futures import ProcessPoolExecutor

    chunks = [scenarios[i::jobs * 4] for i in range(jobs * 4)]
    results: dict[str, ScenarioResult] = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for k, part in enumerate(pool.map(_run_chunk, chunks, [cfg_data] * len(chunks))):
            for r in part:
                results[r.name] = r
            if progress:
                print(f"[{k + 1}/{len(chunks)}] scenario chunks", file=sys.stderr, flush=True)
    return [results[sc.name] for sc in scenarios]


# ---- scoring -------------------------------------------------------------------------------
@dataclass
class FaultOutcome:
    scenario: str
    normal: str
    kind: str
    caught: bool
    delay: int | None
    held: bool | None  # None for spikes
    cleared_after: int | None  # readings after the fault's end; None when not cleared in the series
    explained_as: str | None


def lasts(kind: str) -> bool:
    """Whether a fault kind lasts (held is judged for it): every kind but the spike, the
    suite's and unseen_faults.py's."""
    return kind != "spike"


def assess(r: ScenarioResult) -> tuple[list[FaultOutcome], list[int]]:
    """Per fault: caught / delay / held / cleared; and the raises that belong to no fault."""
    outcomes = []
    used: set[int] = set()
    for f in r.faults:
        excused = [k for k, i in enumerate(r.raised) if f.start <= i <= f.end + GRACE]
        used.update(excused)
        # A sustained fault is caught only while it lasts: a ramp alarmed only by the jump of its
        # return to normal counted as caught, and then as held (its alarm outlived its end).
        lasting = lasts(f.kind)
        last = f.end if lasting else f.end + GRACE
        hits = [k for k in excused if r.raised[k] <= last]
        if not hits:
            outcomes.append(FaultOutcome(r.name, r.normal, f.kind, False, None, False if lasting else None, None, None))
            continue
        k = hits[0]
        at = r.raised[k]
        end_of_alarm = next((i for i, _ in r.ended if i > at), None)
        held = None
        cleared_after = None
        if lasting:
            held = end_of_alarm is None or end_of_alarm > f.end
            cleared_after = None if end_of_alarm is None else end_of_alarm - f.end
        outcomes.append(FaultOutcome(r.name, r.normal, f.kind, True, at - f.start, held, cleared_after, r.kinds[k]))
    nuisance = [i for k, i in enumerate(r.raised) if k not in used]
    return outcomes, nuisance


def fault_free_readings(r: ScenarioResult) -> int:
    """Scored readings outside every fault's span (and its grace)."""
    n = r.scored
    first_scored = r.readings - r.scored
    for f in r.faults:
        lo = max(first_scored, f.start)
        hi = min(r.readings - 1, f.end + GRACE)
        n -= max(0, hi - lo + 1)
    return n


def summarise(results: Iterable[ScenarioResult]) -> dict[str, Any]:
    results = list(results)
    outcomes: list[FaultOutcome] = []
    nuisance: list[tuple[str, int]] = []
    clean_readings = 0
    for r in results:
        o, nz = assess(r)
        outcomes += o
        nuisance += [(r.name, i) for i in nz]
        clean_readings += fault_free_readings(r)

    def block(os_: list[FaultOutcome]) -> dict[str, Any]:
        caught = [o for o in os_ if o.caught]
        sustained = [o for o in os_ if o.held is not None]
        delays = sorted(o.delay for o in caught if o.delay is not None)
        clears = sorted(o.cleared_after for o in sustained if o.cleared_after is not None)
        return {
            "faults": len(os_),
            "caught": len(caught),
            "caught_pct": 100.0 * len(caught) / len(os_) if os_ else None,
            "sustained": len(sustained),
            "held": sum(1 for o in sustained if o.held),
            "held_pct": 100.0 * sum(1 for o in sustained if o.held) / len(sustained) if sustained else None,
            "delay_median": float(np.median(delays)) if delays else None,
            "delay_p90": float(np.percentile(delays, 90)) if delays else None,
            "cleared_after_median": float(np.median(clears)) if clears else None,
        }

    present = {o.kind for o in outcomes}
    unseen = sorted(present - set(FAULT_KINDS))  # unseen_faults.py's kinds
    kinds = [*(FAULT_KINDS if present & set(FAULT_KINDS) or not unseen else ()), *unseen]
    by_fault = {k: block([o for o in outcomes if o.kind == k]) for k in kinds}
    by_normal = {k: block([o for o in outcomes if o.normal == k]) for k in NORMAL_KINDS}
    nuisance_by_normal = {k: sum(1 for name, _ in nuisance if name.split("/", 1)[0] == k) for k in NORMAL_KINDS}
    kinds_named: dict[str, dict[str, int]] = {}
    for o in outcomes:
        if o.caught:
            d = kinds_named.setdefault(o.kind, {})
            d[str(o.explained_as)] = d.get(str(o.explained_as), 0) + 1
    return {
        "scenarios": len(results),
        "readings": sum(r.readings for r in results),
        "fault_free_readings": clean_readings,
        "nuisance_alarms": len(nuisance),
        "nuisance_per_1000": 1000.0 * len(nuisance) / clean_readings if clean_readings else None,
        "nuisance_by_normal": nuisance_by_normal,
        "total": block(outcomes),
        "by_fault": by_fault,
        "by_normal": by_normal,
        "explained_as": kinds_named,
        "missed": [f"{o.scenario} ({o.kind})" for o in outcomes if not o.caught],
        # counted by normal kind / fault / sampling interval, where the failures gather: faults
        # missed, and sustained faults not held to their end (the missed ones included, as
        # held_pct counts them)
        "missed_by": _group([o.scenario for o in outcomes if not o.caught]),
        "not_held_by": _group([o.scenario for o in outcomes if o.held is False]),
        "not_held": [f"{o.scenario} ({o.kind})" for o in outcomes if o.held is False and o.caught],
        "nuisance": [f"{name} @{i}" for name, i in nuisance],
        "us_per_reading": 1e6 * sum(r.seconds for r in results) / max(1, sum(r.readings for r in results)),
    }


def _group(names: list[str]) -> dict[str, int]:
    """Scenario names (kind/fault/sigma/dt/seed) counted by kind/fault/dt, largest first."""
    counts: dict[str, int] = {}
    for name in names:
        kind, fault, _, dt, _ = name.split("/")
        key = f"{kind}/{fault}/{dt}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def format_summary(s: dict[str, Any], limit: int = 12) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}%"

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:g}"

    lines = [
        f"{s['scenarios']} scenarios, {s['readings']:,} readings, {s['fault_free_readings']:,} fault-free scored readings",
        f"nuisance alarms: {s['nuisance_alarms']} ({num(round(s['nuisance_per_1000'] or 0.0, 4))} per 1,000 fault-free readings)"
        f"  by normal kind: {s['nuisance_by_normal']}",
        "",
        f"{'fault':<10} {'faults':>6} {'caught':>8} {'held':>8} {'delay p50':>9} {'delay p90':>9} {'clear p50':>9}  explained as",
    ]
    for k, b in [*s["by_fault"].items(), ("TOTAL", s["total"])]:
        named = s["explained_as"].get(k, {}) if k != "TOTAL" else {}
        lines.append(f"{k:<10} {b['faults']:>6} {pct(b['caught_pct']):>8} {pct(b['held_pct']):>8} {num(b['delay_median']):>9} "
                     f"{num(b['delay_p90']):>9} {num(b['cleared_after_median']):>9}  {', '.join(f'{a} {n}' for a, n in sorted(named.items()))}")
    lines.append("")
    lines.append(f"{'normal':<10} {'faults':>6} {'caught':>8} {'held':>8} {'delay p50':>9}")
    for k, b in s["by_normal"].items():
        lines.append(f"{k:<10} {b['faults']:>6} {pct(b['caught_pct']):>8} {pct(b['held_pct']):>8} {num(b['delay_median']):>9}")
    for label in ("missed_by", "not_held_by"):
        if s[label]:
            lines.append(f"{label}: " + ", ".join(f"{k} {n}" for k, n in s[label].items()))
    for label in ("missed", "not_held", "nuisance"):
        items = s[label]
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            lines.append(f"{label}: " + "; ".join(items[:limit]) + more)
    lines.append(f"{s['us_per_reading']:.1f} us/reading through Pipeline.process")
    return "\n".join(lines)
