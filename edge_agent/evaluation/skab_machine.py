"""``edge-agent evaluate --skab DIR --machine``: SKAB through the live path, the bench as one machine.

Each SKAB file is replayed row by row as the message a PLC publishing one JSON object per
machine would send (``json_multi``: ``{"ts": .., "Current": .., "Pressure": .., ...}``)
into ``Ingest.handle``, the function the MQTT link calls: every sensor's own series
(``Pipeline``, the per-series default) and the machine's row (``MachineSet``) take it,
fitted inline at the row that completes their training, exactly as live. The benchmark's
split holds because the machine trains on ``machines.min_train_rows`` = 400 rows (and the
series on ``detector.min_train_samples`` = 400 readings) and scores the rest; no label is
read until the scoring below.

Reported (``skab.py`` implements the metrics):

* valve1 (16 files): outlier F1 / FAR / MAR of the *in-alarm* state per row, changepoint NAB
  of the *raises* (standard, low FP, low FN), beside the published results and the ceiling
  for one raise per fault episode; the same for the per-series default (a row is in alarm
  when any sensor's series is) as today's baseline;
* ``anomaly-free.csv`` (fit on its first 400 rows, score the rest): alarms per 1,000 rows
  and the share of the time in alarm, nuisance by definition;
* ``--lofo``: leave one valve file out: the detector's ``k`` and ``tau_s`` chosen on 15 files
  by F1, scored on the 16th, pooled; beside the in-sample figures;
* ``--blind-spot``: steps and ramps injected into each sensor of the anomaly-free recording
  (``skab_blind_spot.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from edge_agent.evaluation import skab

TOPIC = "skab/bench"
MACHINE = "bench"
LOFO_GRID = {"k": [4.0, 5.0, 6.0], "tau_s": [5.0, 10.0, 20.0]}


@dataclass
class Run:
    """One file replayed: per row, machine and any-series in-alarm state and raises."""

    name: str
    machine_alarm: np.ndarray
    machine_raise: np.ndarray
    series_alarm: np.ndarray
    series_raise: np.ndarray
    scored_from: int  # first row the machine scored
    us_per_row: float
    stats: dict[str, Any]


def agent_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluation's config as plain data: a json_multi subscription naming the machine,
    both models trained on the benchmark's 400 rows, and 2020 timestamps accepted."""
    from edge_agent.config import AgentConfig

    data: dict[str, Any] = {
        "gateway_id": "skab",
        "subscriptions": [{"topic": "skab/{machine}", "series": "{machine}/{sensor}", "format": "json_multi", "machine": "{machine}"}],
        "detector": {"min_train_samples": skab.FIT_ROWS},
        "machines": {"min_train_rows": skab.FIT_ROWS},
        "ingest": {"max_past_age_s": 1e10, "replay_window_s": 0},
    }
    for key, value in (overrides or {}).items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return AgentConfig.model_validate(data).model_dump(mode="json")


def replay(f: skab.SkabFile, cfg_data: dict[str, Any], values: np.ndarray | None = None) -> Run:
    """Stream one file (or its ``values`` with faults injected) through ``Ingest.handle``."""
    from edge_agent.config import AgentConfig
    from edge_agent.ingest import Ingest
    from edge_agent.machines import MachineSet
    from edge_agent.pipeline import InlineTrainer, Pipeline

    cfg = AgentConfig.model_validate(cfg_data)
    pipe = Pipeline(cfg, trainer=InlineTrainer(), on_alarm=lambda e: None)
    machines = MachineSet(cfg, InlineTrainer(), on_alarm=lambda e: None)
    ing = Ingest(cfg, pipe, machines=machines)
    x = f.values if values is None else values
    n = len(f.ts)
    m_alarm = np.zeros(n, bool)
    m_raise = np.zeros(n, bool)
    s_alarm = np.zeros(n, bool)
    s_raise = np.zeros(n, bool)
    series_ids = [f"{MACHINE}/{s}" for s in f.sensors]
    sensors = f.sensors
    scored_from = -1
    t0 = time.perf_counter()
    raised_before = 0
    series_active_before = False
    for i in range(n):
        payload = orjson.dumps({"ts": float(f.ts[i]), **dict(zip(sensors, x[i].tolist(), strict=True))})
        ing.handle(TOPIC, payload)
        m = machines.machines[MACHINE]
        m_alarm[i] = m.alarm.active
        m_raise[i] = m.n_alarms != raised_before
        raised_before = m.n_alarms
        if scored_from < 0 and m.n_scored:
            scored_from = i
        active = any(pipe.series[s].active for s in series_ids)
        s_alarm[i] = active
        s_raise[i] = active and not series_active_before
        series_active_before = active
    seconds = time.perf_counter() - t0
    if ing.rejected:
        raise RuntimeError(f"{f.name}: ingest refused readings: {ing.rejected}")
    model = machines.machines[MACHINE].model
    stats = model.meta.get("stats", {}) if model is not None else {}
    return Run(f.name, m_alarm, m_raise, s_alarm, s_raise, scored_from, 1e6 * seconds / n, stats)


def _replay_named(root: str, name: str, cfg_data: dict[str, Any]) -> Run:
    return replay(skab.read_file(root, name), cfg_data)


def replay_all(root: str, names: list[str], cfg_data: dict[str, Any], jobs: int, progress: bool = False) -> list[Run]:
    if jobs <= 1:
        runs = []
        for i, n in enumerate(names):
            runs.append(_replay_named(root, n, cfg_data))
            if progress:
                print(f"[{i + 1}/{len(names)}] {n}", file=sys.stderr, flush=True)
        return runs
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_replay_named, root, n, cfg_data) for n in names]
        runs = []
        for i, fut in enumerate(futures):
            runs.append(fut.result())
            if progress:
                print(f"[{i + 1}/{len(names)}] {names[i]}", file=sys.stderr, flush=True)
        return runs


# ---- scoring ---------------------------------------------------------------------------------
def score_valve(root: str, runs: list[Run], which: str = "machine") -> dict[str, Any]:
    pairs, cps = [], []
    for r in runs:
        f = skab.read_file(root, r.name)
        if which == "machine" and r.scored_from != skab.FIT_ROWS:
            raise RuntimeError(f"{r.name}: the machine scored from row {r.scored_from}, not {skab.FIT_ROWS}")
        part = skab.scored_part(f)
        alarm = r.machine_alarm if which == "machine" else r.series_alarm
        raised = r.machine_raise if which == "machine" else r.series_raise
        pairs.append((f.anomaly[part], alarm[part]))
        cps.append((f.ts[part], f.changepoint[part], raised[part]))
    o = skab.outlier_score(pairs)
    return {"outlier": o.as_dict(), "changepoint_nab": skab.changepoint_nab(cps)}


def ceiling(root: str, names: list[str]) -> float:
    """Changepoint NAB (standard) of one raise a second after each fault episode begins."""
    cps = []
    for name in names:
        f = skab.read_file(root, name)
        part = skab.scored_part(f)
        ts, cp = f.ts[part], f.changepoint[part]
        one = np.zeros_like(cp)
        one[np.flatnonzero(cp)[0] + 1] = True
        cps.append((ts, cp, one))
    return skab.changepoint_nab(cps)["standard"]


def score_free(run: Run, which: str = "machine") -> dict[str, float]:
    part = slice(skab.FIT_ROWS, len(run.machine_alarm))
    alarm = (run.machine_alarm if which == "machine" else run.series_alarm)[part]
    raised = (run.machine_raise if which == "machine" else run.series_raise)[part]
    return {"rows": int(alarm.size), "alarms": int(raised.sum()), "alarms_per_1000": 1000.0 * raised.sum() / max(1, alarm.size),
            "time_in_alarm_pct": 100.0 * float(alarm.mean()) if alarm.size else 0.0}


def lofo(root: str, names: list[str], base: dict[str, Any], jobs: int, progress: bool) -> dict[str, Any]:
    """Leave one file out over LOFO_GRID: per held-out file, the setting with the best pooled
    F1 on the other 15, and the held-out file's rows under it, pooled."""
    files = {n: skab.read_file(root, n) for n in names}
    counts: dict[tuple[float, ...], dict[str, tuple[int, int, int, int]]] = {}
    keys = list(LOFO_GRID)
    for combo in itertools.product(*(LOFO_GRID[k] for k in keys)):
        params = {**base["machines"]["detector"]["params"], **dict(zip(keys, combo, strict=True))}
        cfg = {**base, "machines": {**base["machines"], "detector": {**base["machines"]["detector"], "params": params}}}
        per = {}
        for r in replay_all(root, names, cfg, jobs):
            f = files[r.name]
            part = skab.scored_part(f)
            s = skab.outlier_score([(f.anomaly[part], r.machine_alarm[part])])
            per[r.name] = (s.tp, s.fp, s.fn, s.tn)
        counts[combo] = per
        if progress:
            print(f"lofo: {dict(zip(keys, combo, strict=True))} done", file=sys.stderr, flush=True)

    def pooled(combo: tuple[float, ...], subset: list[str]) -> skab.OutlierScore:
        t = np.sum([counts[combo][n] for n in subset], axis=0)
        return skab.OutlierScore(*(int(v) for v in t))

    held: list[tuple[int, int, int, int]] = []
    chosen: dict[str, dict[str, float]] = {}
    for n in names:
        rest = [m for m in names if m != n]
        best = max(counts, key=lambda c: pooled(c, rest).f1)
        chosen[n] = dict(zip(keys, best, strict=True))
        held.append(counts[best][n])
    t = np.sum(held, axis=0)
    out = skab.OutlierScore(*(int(v) for v in t))
    in_sample = {json.dumps(dict(zip(keys, c, strict=True))): pooled(c, names).as_dict() for c in counts}
    return {"held_out": out.as_dict(), "chosen": chosen, "grid_in_sample": in_sample}


# ---- the command -----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the SKAB mode; ``evaluate.py`` adds them to its own parser."""
    parser.add_argument("--skab", default=None, metavar="DIR",
                        help="SKAB: the folder holding valve1/ and anomaly-free/ (each sensor its own series; --machine: one machine)")
    parser.add_argument("--machine", action="store_true", help="with --skab: the bench's eight sensors as one machine (MachineSet)")
    parser.add_argument("--lofo", action="store_true", help="with --skab --machine: leave-one-file-out over k and tau_s")
    parser.add_argument("--blind-spot", action="store_true", help="with --skab --machine: steps and ramps injected into each sensor")


def run(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from edge_agent.evaluation import skab_blind_spot

    root = args.skab
    try:
        names = skab.list_files(root)
        if not names:
            raise FileNotFoundError(f"no valve1/*.csv under {root}")
        cfg_data = agent_config(overrides)
    except (OSError, ValueError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    progress = not args.quiet
    runs = replay_all(root, names, cfg_data, args.jobs, progress)
    free = replay(skab.read_file(root, skab.ANOMALY_FREE), cfg_data)
    out: dict[str, Any] = {
        "detector": cfg_data["machines"]["detector"],
        "alarms": {k: cfg_data["machines"]["alarms"][k] for k in ("hold_ratio", "clear_after", "accept_after_s")},
        "valve1": {"machine": score_valve(root, runs), "per_series_default": score_valve(root, runs, "series"),
                   "files": len(runs), "changepoint_ceiling_one_raise": ceiling(root, names)},
        "anomaly_free": {"machine": score_free(free), "per_series_default": score_free(free, "series")},
        "us_per_row_through_ingest": float(np.mean([r.us_per_row for r in runs])),
        "published_outlier": skab.PUBLISHED_OUTLIER,
        "published_changepoint_nab": skab.PUBLISHED_CHANGEPOINT_NAB,
    }
    if args.lofo:
        out["lofo"] = lofo(root, names, cfg_data, args.jobs, progress)
    if args.blind_spot:
        out["blind_spot"] = skab_blind_spot.run(root, cfg_data, args.jobs, progress)
    out["wall_seconds"] = time.perf_counter() - t0
    print(json.dumps(out, indent=1) if args.json else format_report(out))
    return 0


def format_report(out: dict[str, Any]) -> str:
    from edge_agent.evaluation import skab_blind_spot

    v = out["valve1"]
    lines = [f"machine detector: {out['detector']['name']} {json.dumps(out['detector']['params'])}, alarms {json.dumps(out['alarms'])}", ""]
    lines.append(f"SKAB valve1 ({v['files']} files; first {skab.FIT_ROWS} rows of each fit, the rest scored)")
    head = f"  {'':34} {'F1':>5} {'FAR %':>6} {'MAR %':>6}   {'NAB std':>7} {'low FP':>7} {'low FN':>7}"
    lines.append(head)

    def row(label: str, r: dict[str, Any]) -> str:
        o, c = r["outlier"], r["changepoint_nab"]
        return f"  {label:34} {o['f1']:5.2f} {o['far_pct']:6.1f} {o['mar_pct']:6.1f}   {c['standard']:7.1f} {c['low_fp']:7.1f} {c['low_fn']:7.1f}"

    lines.append(row("machine (in alarm / raises)", v["machine"]))
    lines.append(row("per-series default, any sensor", v["per_series_default"]))
    if "lofo" in out:
        h = out["lofo"]["held_out"]
        lines.append(f"  {'machine, leave one file out':34} {h['f1']:5.2f} {h['far_pct']:6.1f} {h['mar_pct']:6.1f}   (k, tau_s chosen on the other 15 files)")
    lines.append(f"  ceiling for one raise per episode (NAB standard): {v['changepoint_ceiling_one_raise']:.1f}")
    pub = ", ".join(f"{k} {a:.2f}/{b:.1f}/{c:.1f}" for k, (a, b, c) in out["published_outlier"].items())
    lines.append(f"  published on all SKAB (F1/FAR/MAR): {pub}")
    lines.append("  published changepoint NAB standard: " + ", ".join(f"{k} {s:.1f}" for k, s in out["published_changepoint_nab"].items()))
    lines.append("")
    a = out["anomaly_free"]
    lines.append("SKAB anomaly-free (fit on its first 400 rows, the rest scored: every alarm is a nuisance)")
    for label, key in (("machine", "machine"), ("per-series default, any sensor", "per_series_default")):
        r = a[key]
        lines.append(f"  {label:34} {r['alarms']:4d} alarms in {r['rows']} rows = {r['alarms_per_1000']:.2f} per 1,000; in alarm {r['time_in_alarm_pct']:.1f} % of the time")
    if "lofo" in out:
        lines.append("")
        lines.append("leave one file out: setting chosen per held-out file")
        for name, c in out["lofo"]["chosen"].items():
            lines.append(f"  {name:16} {json.dumps(c)}")
    if "blind_spot" in out:
        lines.append("")
        lines.extend(skab_blind_spot.format_table(out["blind_spot"]))
    lines.append("")
    lines.append(f"{out['us_per_row_through_ingest']:.1f} us per row through Ingest.handle (8 series + the machine), {out['wall_seconds']:.1f} s wall")
    return "\n".join(lines)


def default_jobs() -> int:
    return min(2, os.cpu_count() or 1)
