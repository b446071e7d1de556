"""Machines, in process: a row scored, a row assembled, a json_multi message, memory per machine.

* ``score_row``: ``baseline_t2`` fitted on SKAB anomaly-free's first 400 rows (8 sensors),
  timed row by row over the recording's other rows (cycled), as ``part_scoring`` times
  ``score_one``; also 16 and 32 synthetic sensors, to show how the cost grows (O(p²) for T²);
* ``MachineSet.feed_row`` (one message's 8 readings: assembly, score, alarm decision) and
  ``MachineSet.feed`` x 8 (the per-sensor-topic path), per row;
* ``Ingest.handle`` of a ``json_multi`` message of 8 readings: 8 series and the machine, and
  the same without a MachineSet (the series only), per message;
* memory: ``tracemalloc`` growth per machine with a fitted model and a full row buffer;
* the agent's path (``agent``): a real ``edge-agent run`` (mosquitto, a json_multi
  subscription with ``machine``) drains the same messages, published in one burst after its
  machine model exists; its CPU seconds per message (8 series + the machine row, MQTT
  receive included) beside the same agent without ``machine``, and the machine rows'
  ``score_row`` latency as the agent's own ``/metrics`` histogram records it (every 8th row).
"""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, summary

perf_ns = time.perf_counter_ns
SKAB = REPO.parent / "shared" / "data" / "skab" / "data"


def _ns(samples: np.ndarray, floor_ns: float) -> dict[str, Any]:
    s = summary(samples, 1e-3, "us")
    for k in ("median", "p99", "avg"):
        s[f"{k}_corrected"] = max(0.0, s[k] - floor_ns / 1e3)
    return s


def _floor(n: int) -> float:
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = perf_ns()
        out[i] = perf_ns() - t0
    return float(np.median(out))


def _rows() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from edge_agent.evaluation import skab

    if (Path(SKAB) / skab.ANOMALY_FREE).is_file():
        f = skab.read_file(SKAB, skab.ANOMALY_FREE)
        return f.values, f.ts, f.sensors
    # Without the data set: a synthetic 8-sensor machine (noted in the result).
    rng = np.random.default_rng(5)
    n = 9000
    load = np.cumsum(rng.normal(0, 0.01, n))
    x = np.column_stack([10 * (j + 1) + load * (j % 3) + rng.normal(0, 0.1, n) for j in range(8)])
    return x, np.arange(n, dtype=float), [f"s{j}" for j in range(8)]


def _synthetic(p: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(p)
    load = np.cumsum(rng.normal(0, 0.01, n))
    x = np.column_stack([5.0 + load * (j % 4) + rng.normal(0, 0.1, n) for j in range(p)])
    return x, np.arange(n, dtype=float)


def _time_score_row(det: Any, rows: list[list[float]], n_calls: int) -> np.ndarray:
    out = np.empty(n_calls, dtype=np.int64)
    m = len(rows)
    score = det.score_row
    gc.disable()
    try:
        for i in range(n_calls):
            r = rows[i % m]
            t0 = perf_ns()
            score(r, 1.0)
            out[i] = perf_ns() - t0
    finally:
        gc.enable()
    return out


def _machine_cfg() -> Any:
    from edge_agent.config import AgentConfig

    return AgentConfig.model_validate({
        "gateway_id": "gw-bench",
        "subscriptions": [{"topic": "plc/{machine}", "series": "{machine}/{sensor}", "format": "json_multi", "machine": "{machine}"}],
        "detector": {"name": "statistical", "min_train_samples": 400},
        "machines": {"min_train_rows": 400},
        "ingest": {"max_past_age_s": 1e10, "replay_window_s": 0},
    })


def run(quick: bool = False) -> dict[str, Any]:
    from edge_agent.machine_detectors.baseline_t2 import BaselineT2Detector
    from edge_agent.machines import MachineSet
    from edge_agent.pipeline import InlineTrainer

    n_calls = 50_000 if quick else 200_000
    floor = _floor(n_calls)
    x, ts, sensors = _rows()
    out: dict[str, Any] = {"calls": n_calls, "timer_overhead_median_us": floor / 1e3, "data": "SKAB anomaly-free" if sensors[0].startswith("Acc") else "synthetic"}

    # ---- score_row ----------------------------------------------------------------------------
    det = BaselineT2Detector()
    t0 = time.perf_counter()
    det.fit(x[:400], ts[:400], sensors)
    out["fit_400_rows_s"] = time.perf_counter() - t0
    rows = x[400:].tolist()
    for r in rows[:2000]:
        det.score_row(r, 1.0)
    out["score_row"] = {"8": _ns(_time_score_row(det, rows, n_calls), floor)}
    for p in (16, 32):
        sx, sts = _synthetic(p)
        d = BaselineT2Detector()
        d.fit(sx[:400], sts[:400], [f"s{j}" for j in range(p)])
        out["score_row"][str(p)] = _ns(_time_score_row(d, sx[400:].tolist(), n_calls // 4), floor)

    # ---- MachineSet: one message's readings, and per-sensor readings -------------------------
    cfg = _machine_cfg()
    n_rows = min(len(x) - 400, n_calls // 8)
    for mode in ("feed_row", "feed"):
        ms = MachineSet(cfg, InlineTrainer(), lambda e: None)
        ms.declare("m", sensors)
        pairs = [list(zip(sensors, r, strict=True)) for r in x.tolist()]
        for i in range(400):
            ms.feed_row("m", pairs[i], float(ts[i]))
        assert ms.machines["m"].model is not None
        times = np.empty(n_rows, dtype=np.int64)
        gc.disable()
        try:
            if mode == "feed_row":
                for i in range(n_rows):
                    r, t = pairs[400 + i], float(ts[400 + i])
                    t0 = perf_ns()
                    ms.feed_row("m", r, t)
                    times[i] = perf_ns() - t0
            else:
                feed = ms.feed
                for i in range(n_rows):
                    r, t = pairs[400 + i], float(ts[400 + i])
                    t0 = perf_ns()
                    for s, v in r:
                        feed("m", s, v, t)
                    times[i] = perf_ns() - t0
        finally:
            gc.enable()
        out[f"machineset_{mode}_per_row"] = _ns(times, floor)
        out[f"machineset_{mode}_rows_scored"] = ms.machines["m"].n_scored

    # ---- Ingest.handle, json_multi ------------------------------------------------------------
    out["ingest_json_multi"] = {}
    for label, with_machines in (("series_and_machine", True), ("series_only", False)):
        from edge_agent.ingest import Ingest
        from edge_agent.pipeline import Pipeline

        pipe = Pipeline(cfg, trainer=InlineTrainer(), on_alarm=lambda e: None)
        ms = MachineSet(cfg, InlineTrainer(), lambda e: None) if with_machines else None
        ing = Ingest(cfg, pipe, machines=ms)
        payloads = [json.dumps({"ts": float(ts[i]), **dict(zip(sensors, x[i].tolist(), strict=True))}).encode() for i in range(len(x))]
        for i in range(400):
            ing.handle("plc/m", payloads[i])
        times = np.empty(n_rows, dtype=np.int64)
        handle = ing.handle
        gc.disable()
        try:
            for i in range(n_rows):
                p = payloads[400 + i]
                t0 = perf_ns()
                handle("plc/m", p)
                times[i] = perf_ns() - t0
        finally:
            gc.enable()
        if ing.rejected:
            raise RuntimeError(f"ingest refused readings during the timing: {ing.rejected}")
        out["ingest_json_multi"][label] = _ns(times, floor)
    out["ingest_json_multi"]["readings_per_message"] = len(sensors)

    # ---- memory per machine -------------------------------------------------------------------
    n_machines = 50 if quick else 200
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    ms = MachineSet(cfg, InlineTrainer(), lambda e: None)
    fill = cfg.machines.buffer_rows
    for k in range(n_machines):
        mid = f"pump-{k}"
        ms.declare(mid, sensors)
        for i in range(fill):
            ms.feed_row(mid, pairs[i % len(pairs)], float(i))
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    out["memory"] = {
        "machines": n_machines, "sensors": len(sensors), "buffer_rows": fill,
        "bytes_per_machine": grown / n_machines,
        "buffer_bytes_per_machine": fill * (len(sensors) + 1) * 8,
        "note": "tracemalloc growth (Python and numpy allocations) with a fitted model and a full row buffer; the ring of complete rows is most of it",
    }
    out["agent"] = _agent_path(x, ts, sensors, 2000 if quick else 6000)
    return out


def _histogram_quantile(text: str, name: str, q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of a Prometheus histogram."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    for le, count in sorted(buckets):
        if count >= q * total:
            return le
    return None


def _agent_path(x: np.ndarray, ts: np.ndarray, sensors: list[str], n: int) -> dict[str, Any]:
    from bench.common import BenchAgent, _h, cpu_seconds, http_get, start_broker, wait_for, workdir

    Publisher = _h.Publisher  # noqa: N806 - tests/helpers.py's PLC-side client

    train = 400
    t_end = time.time() - 60.0
    t0 = t_end - float(ts[train + n] - ts[0])  # the rows' own spacing, ending a minute ago
    payloads = [json.dumps({"ts": t0 + float(ts[i] - ts[0]), **dict(zip(sensors, x[i % len(x)].tolist(), strict=True))})
                for i in range(train + n)]
    out: dict[str, Any] = {"messages": n, "readings_per_message": len(sensors)}
    broker = start_broker("machines-broker")
    try:
        for label, machine in (("series_and_machine", "{machine}"), ("series_only", None)):
            sub: dict[str, Any] = {"topic": "plc/{machine}", "series": "{machine}/{sensor}", "format": "json_multi"}
            if machine:
                sub["machine"] = machine
            agent = BenchAgent(workdir(f"machines-agent-{label}"), broker, name=label, **{
                "subscriptions": [sub], "ingest.max_past_age_s": 1e6, "detector.min_train_samples": train,
                "machines.min_train_rows": train, "log.level": "WARNING"})
            agent.start()
            try:
                agent.wait_ready(60)
                pub = Publisher(broker)
                try:
                    for p in payloads[:train + 10]:
                        pub.publish("plc/pump", p).wait_for_publish(30)
                    wait_for(lambda a=agent: a.metric("readings_scored") > 0, 60, "series models")
                    if machine:
                        wait_for(lambda a=agent: a.metric("machines_models_trained") > 0, 60, "the machine model")
                    scored0 = agent.metric("readings_scored")
                    cpu0 = cpu_seconds(agent.pid)
                    infos = [pub.publish("plc/pump", p) for p in payloads[train + 10:]]
                    for info in infos:
                        info.wait_for_publish(60)
                    want = scored0 + len(infos) * len(sensors)
                    wait_for(lambda a=agent, w=want: a.metric("readings_scored") >= w, 120, f"{want} readings scored")
                    cpu = cpu_seconds(agent.pid) - cpu0
                finally:
                    pub.close()
                _, body = http_get(agent.url("/metrics"), timeout=10)
                text = body.decode()
                res: dict[str, Any] = {"cpu_us_per_message": 1e6 * cpu / len(infos), "messages": len(infos)}
                if machine:
                    name = "edge_agent_machines_score_latency_seconds"
                    res["score_row_p50_bucket_us"] = 1e6 * (_histogram_quantile(text, name, 0.5) or float("nan"))
                    res["score_row_p99_bucket_us"] = 1e6 * (_histogram_quantile(text, name, 0.99) or float("nan"))
                    res["rows_scored"] = agent.metric("machines_rows_scored")
                    res["alarms_raised"] = agent.metric("machines_alarms_raised")
                out[label] = res
            finally:
                agent.stop()
    finally:
        broker.stop()
    a, b = out["series_and_machine"]["cpu_us_per_message"], out["series_only"]["cpu_us_per_message"]
    out["machine_cpu_us_per_row"] = a - b
    out["note"] = ("CPU of the agent process per json_multi message, MQTT receive included; the machine's cost per row is "
                   "the difference. The latency histogram's buckets are coarse: a p99 'bucket' is an upper bound")
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1, default=float))
