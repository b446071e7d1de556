"""Part 1, scoring in process: one reading per detector, batches, Pipeline.process, Ingest.handle."""

from __future__ import annotations

import gc
import json
import time
from typing import Any

import numpy as np

from bench import receive_path
from bench.common import series_id, series_topic, summary

perf_ns = time.perf_counter_ns


def _overhead(n: int) -> np.ndarray:
    """The timing harness with nothing inside: the per-call floor of perf_counter_ns pairs."""
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = perf_ns()
        out[i] = perf_ns() - t0
    return out


def _time_calls(fn: Any, args: list[Any], times: list[float], n: int) -> np.ndarray:
    """``fn(value, ts)`` per call, as ``Pipeline.process`` calls ``score_one``; the timestamps
    keep rising across the repeats of ``args`` (a detector with a daily profile sees time go on)."""
    out = np.empty(n, dtype=np.int64)
    m = len(args)
    for i in range(n):
        a = args[i % m]
        t = times[i]
        t0 = perf_ns()
        fn(a, t)
        out[i] = perf_ns() - t0
    return out


ROBUST_PARTS = ("scales", "seasonal", "tails 1", "tails 2")  # robust's slow cycle, by phase


class _Control:
    """The machine's own jitter, for comparison: slot reads and writes and float arithmetic,
    the same bytecodes on every call (nothing depends on the data), called as ``score_one``.
    Its p99 over its median is what this machine adds to any code of that length; the rest
    of a detector's is its own (its slow phases, its branches)."""

    __slots__ = ("a", "b", "c", "rounds")

    def __init__(self, rounds: int) -> None:
        self.a = self.b = self.c = 0.0
        self.rounds = rounds

    def __call__(self, x: float, ts: float) -> float:
        a, b, c = self.a, self.b, self.c
        for _ in range(self.rounds):
            a += 0.01 * (x - a)
            b += 0.001 * (x - a - b)
            c = c * 0.99 + a * b * 1e-6
        self.a, self.b, self.c = a, b, c
        return c


def _control_like(median_ns: float, args: list[float], times: list[float]) -> _Control:
    """A control whose median call takes about ``median_ns`` (interrupts and cache misses
    hit a call in proportion to its length, so the lengths must match)."""
    probe = _Control(20)
    per_round = float(np.median(_time_calls(probe, args, times, 2000))) / 20
    return _Control(max(1, round(median_ns / per_round)))


def _against_control(det: Any, args: list[float], times: list[float], n: int) -> dict[str, Any]:
    """score_one and the control, alternately call by call (so both see the same machine),
    n calls each: the median, p99 and p99 / median of each."""
    m = len(args)
    warm = _time_calls(det.score_one, args, times, 2000)
    ctl = _control_like(float(np.median(warm)), args, times)
    out = {"robust": np.empty(n, dtype=np.int64), "control": np.empty(n, dtype=np.int64)}
    fn, rd, rc = det.score_one, out["robust"], out["control"]
    for i in range(n):
        a, t = args[i % m], times[2000 + i]
        t0 = perf_ns()
        fn(a, t)
        t1 = perf_ns()
        ctl(a, t)
        t2 = perf_ns()
        rd[i], rc[i] = t1 - t0, t2 - t1
    res: dict[str, Any] = {"calls_each": n, "control_rounds": ctl.rounds}
    for k, v in out.items():
        med, p99 = float(np.median(v)) / 1e3, float(np.percentile(v, 99)) / 1e3
        res[k] = {"median_us": med, "p99_us": p99, "p99_over_median": p99 / med}
    return res


def _robust_p99(det: Any, args: list[float], times: list[float], n: int) -> dict[str, Any]:
    """What robust's p99 is made of: each reading timed as in _time_calls, and labelled by the
    part of the slow cycle it did (its ``s_phase`` moved) and whether it taught the daily
    profile (its ``p_tick`` wrapped): per label, the share of readings, median and p99, and
    its share of the slowest 1 %."""
    out = np.empty(n, dtype=np.int64)
    labels: list[str] = []
    m = len(args)
    for i in range(n):
        a, t = args[i % m], times[i]
        phase = det.s_phase
        t0 = perf_ns()
        det.score_one(a, t)
        out[i] = perf_ns() - t0
        label = ROBUST_PARTS[det.s_phase] if det.s_phase != phase else "no part"
        labels.append(label + " + profile" if det.p_tick == 0 else label)
    lab = np.array(labels)
    slowest = out >= np.percentile(out, 99)
    res: dict[str, Any] = {}
    for name in sorted(set(labels)):
        sel = lab == name
        res[name] = {"share": float(sel.mean()), "median_us": float(np.median(out[sel])) / 1e3,
                     "p99_us": float(np.percentile(out[sel], 99)) / 1e3, "share_of_slowest_1pct": float((sel & slowest).sum() / slowest.sum())}
    return res


def _ns_summary(samples: np.ndarray, floor_ns: float) -> dict[str, Any]:
    s = summary(samples, 1e-3, "us")
    s["overhead_median_us"] = floor_ns / 1e3
    for k in ("median", "p99", "avg"):
        s[f"{k}_corrected"] = max(0.0, s[k] - floor_ns / 1e3)
    return s


def anomaly_mask(n: int, n_series: int) -> np.ndarray:
    """Reading i goes to series i % n_series; 1% are anomalous, one per series every 100 of its
    readings, phase-shifted per series, so each anomaly raises once and is cleared before the next."""
    i = np.arange(n)
    return ((i // n_series + i % n_series) % 100) == 0


def training_values(rng: np.random.Generator, n: int) -> np.ndarray:
    # Bounded noise (uniform 19..21): a statistical model on it never flags a normal reading,
    # so every alarm in the end-to-end parts is an injected anomaly.
    return rng.uniform(19.0, 21.0, n)


def _interpreted_robust() -> Any:
    """robust's class from its source, where the agent's is compiled (detectors/native.py), so
    the report shows both; None where the agent's is interpreted already."""
    from edge_agent.detectors import native, robust

    if not native.is_compiled(robust):
        return None
    return native.load_source("robust_interpreted").RobustDetector


def run(quick: bool = False) -> dict[str, Any]:
    from edge_agent import detectors
    from edge_agent.detectors import native

    n_calls = 100_000 if quick else 200_000
    rng = np.random.default_rng(1)
    train = training_values(rng, 2000)
    # Stream to score: normal readings with 1% anomalies.
    stream = training_values(rng, 10_000)
    stream[::100] = 60.0
    stream_list = [float(x) for x in stream]
    # One reading a minute, training first: 2,000 training readings span 1.4 days, so a
    # detector with a daily profile has it serving by the time it is timed.
    t_start = time.time() - (2000 + 5000 + n_calls) * 60.0
    train_ts = t_start + 60.0 * np.arange(2000)
    times = [t_start + 60.0 * (2000 + i) for i in range(5000 + 2 * n_calls + 2000)]
    floor = _overhead(n_calls)
    floor_med = float(np.median(floor))
    out: dict[str, Any] = {"calls_per_detector": n_calls, "timer_overhead": summary(floor, 1e-3, "us"), "detectors": {},
                           "robust_build": native.STATUS}
    gc.collect()
    interpreted = _interpreted_robust()
    makers: list[tuple[str, Any]] = [(name, lambda name=name: detectors.create(name, {})) for name in sorted(detectors.REGISTRY)]
    if interpreted is not None:
        makers.append(("robust_interpreted", interpreted))
    for name, make in makers:
        det = make()
        t0 = time.perf_counter()
        det.fit(train, train_ts)
        fit_s = time.perf_counter() - t0
        for i, x in enumerate(stream_list[:5000]):  # warm-up (numba compile, caches)
            det.score_one(x, times[i])
        gc.disable()
        try:
            one = _time_calls(det.score_one, stream_list, times[5000:], n_calls)
            made_of = _robust_p99(det, stream_list, times[5000 + n_calls:], n_calls // 2) if name == "robust" else None
            control = (_against_control(det, stream_list, times[5000 + n_calls + n_calls // 2:], n_calls // 4)
                       if name.startswith("robust") else None)
        finally:
            gc.enable()
        big = np.tile(stream, 10)  # 100,000 samples
        det.score_many(big[:1000])
        rates = []
        for _ in range(3 if quick else 5):
            t0 = time.perf_counter()
            det.score_many(big)
            rates.append(big.shape[0] / (time.perf_counter() - t0))
        out["detectors"][name] = {
            "fit_2000_s": fit_s,
            "score_one": _ns_summary(one, floor_med),
            **({"score_one_p99_made_of": made_of} if made_of is not None else {}),
            **({"score_one_against_control": control} if control is not None else {}),
            "score_many_100k_samples_per_s": {"best": max(rates), "median": float(np.median(rates)), "runs": len(rates)},
        }
    out["pipeline_process"] = _pipeline(n_calls, floor_med)
    out["ingest_handle"] = _ingest(n_calls, floor_med)
    out["receive_path"] = receive_path.run(quick)
    return out


def _cfg(n_series: int) -> Any:
    from edge_agent.config import AgentConfig

    return AgentConfig.model_validate({
        "gateway_id": "gw-bench",
        "detector": {"name": "statistical", "min_train_samples": 200},
        "series": {"buffer_size": 4096},
    })


def _trained_pipeline(n_series: int, alarms: list[Any]) -> Any:
    from edge_agent.pipeline import InlineTrainer, Pipeline

    pipe = Pipeline(_cfg(n_series), trainer=InlineTrainer(), on_alarm=alarms.append)
    rng = np.random.default_rng(2)
    ts = time.time() - 3600
    for i in range(n_series):
        sid = series_id(i)
        for v in training_values(rng, 200):
            pipe.process(sid, float(v), ts)
            ts += 0.001
        assert pipe.series[sid].model is not None
    return pipe


def _pipeline(n_calls: int, floor_med: float) -> dict[str, Any]:
    """Pipeline.process per reading, 1,000 trained statistical series, 1% anomalous readings."""
    n_series = 1000
    alarms: list[Any] = []
    pipe = _trained_pipeline(n_series, alarms)
    rng = np.random.default_rng(3)
    vals = training_values(rng, n_calls)
    vals[anomaly_mask(n_calls, n_series)] = 60.0  # 1%: each raises once, 10 normal readings clear it
    sids = [series_id(i % n_series) for i in range(n_calls)]
    ts0 = time.time()
    args = [(sids[i], float(vals[i]), ts0 + i * 1e-4) for i in range(n_calls)]
    process = pipe.process
    # Warm-up on the same series and values, 1 s earlier: a timestamp the series has already
    # passed would be refused as stale and time the refusal instead of the scoring.
    for sid, v, t in args[:5000]:
        process(sid, v, t - 1.0)
    alarms.clear()
    out = np.empty(n_calls, dtype=np.int64)
    gc.disable()
    try:
        for i in range(n_calls):
            sid, v, t = args[i]
            t0 = perf_ns()
            process(sid, v, t)
            out[i] = perf_ns() - t0
    finally:
        gc.enable()
    res = _ns_summary(out, floor_med)
    res["series"] = n_series
    res["alarms_emitted"] = len(alarms)
    res["note"] = "on_alarm is list.append here (no JSON, no outbox): the scoring and alarm-decision path only"
    return res


def _ingest(n_calls: int, floor_med: float) -> dict[str, Any]:
    """Ingest.handle per MQTT message: route (cached) + JSON decode + Pipeline.process."""
    from edge_agent.ingest import Ingest

    n_series = 1000
    alarms: list[Any] = []
    pipe = _trained_pipeline(n_series, alarms)
    ing = Ingest(pipe.cfg, pipe)
    rng = np.random.default_rng(4)
    vals = training_values(rng, n_calls)
    vals[anomaly_mask(n_calls, n_series)] = 60.0
    ts0 = time.time()
    msgs = [(series_topic(i % n_series), json.dumps({"value": float(vals[i]), "ts": ts0 + i * 1e-4}).encode()) for i in range(n_calls)]
    handle = ing.handle
    for i in range(5000):  # warm-up 1 s earlier, as in _pipeline
        handle(msgs[i][0], json.dumps({"value": float(vals[i]), "ts": ts0 - 1.0 + i * 1e-4}).encode())
    alarms.clear()
    out = np.empty(n_calls, dtype=np.int64)
    gc.disable()
    try:
        for i in range(n_calls):
            t, p = msgs[i]
            t0 = perf_ns()
            handle(t, p)
            out[i] = perf_ns() - t0
    finally:
        gc.enable()
    if ing.rejected:  # a refused message is not a scored one: the figure would be wrong
        raise RuntimeError(f"ingest refused messages during the timing: {ing.rejected}")
    res = _ns_summary(out, floor_med)
    res["rejected"] = dict(ing.rejected)
    res["alarms_emitted"] = len(alarms)
    res["payload_example"] = msgs[0][1].decode()
    return res


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1))
