"""SKAB through the live path, one series per sensor: the agent's figures beside the published.

For every labelled file of a SKAB group (``valve1`` in the development part), each of the
eight sensors is streamed as its own series through a fresh ``Pipeline.process`` (the
benchmark's split: the first ``skab.FIT_ROWS`` rows fit the model; no label is used for
fitting or thresholds), exactly as the agent would see them from eight MQTT topics.

Predictions, per scored row (row >= FIT_ROWS):

* **outlier**: a row is predicted anomalous when any sensor's alarm is raised at that row
  (the per-sensor in-alarm states pooled by OR into one machine-level state);
* **changepoint**: a change point is predicted at each row where that pooled state turns
  on (a raise; clears are not change points).

Scored with ``skab.outlier_score`` (F1, FAR, MAR) and ``skab.changepoint_nab`` (SKAB's NAB
variant, 60 s windows to the right of each labelled change point), and printed beside the
published multivariate results (``skab.PUBLISHED_*``). The anomaly-free recording is run
too: its alarms are nuisance alarms by definition.

Where the false alarms are (``false_alarm_rows``): every normal row predicted anomalous,
by the alarm span (consecutive rows in alarm) it belongs to: before a labelled fault in a
span that reaches into it (raised **early**), after a labelled fault in a span that began in
or before it (**held past** the fault's end), or in a span that touches no labelled row
(**nuisance**); for the pooled state and for each file and sensor on its own (a row that two
sensors hold counts once pooled, once for each of them per sensor). FAR is what an operator
pays, and these three have different causes and different fixes.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.evaluation import skab


@dataclass
class SkabRun:
    name: str
    ts: np.ndarray
    anomaly: np.ndarray
    changepoint: np.ndarray
    in_alarm: np.ndarray  # (rows, sensors) bool: that sensor's alarm raised at that row
    raises: dict[str, int]  # sensor -> alarms raised
    kinds: dict[str, int]  # explanation kind -> raises
    seconds: float


def run_file(root: str, name: str, cfg_data: dict[str, Any]) -> SkabRun:
    from edge_agent.config import AgentConfig
    from edge_agent.pipeline import InlineTrainer, Pipeline

    f = skab.read_file(root, name)
    data = {**cfg_data, "detector": {**cfg_data["detector"], "min_train_samples": skab.FIT_ROWS}}
    cfg = AgentConfig.model_validate(data)
    rows, n_sensors = f.values.shape
    in_alarm = np.zeros((rows, n_sensors), dtype=bool)
    raises: dict[str, int] = {}
    kinds: dict[str, int] = {}
    t0 = time.perf_counter()
    for j, sensor in enumerate(f.sensors):
        events: list[Any] = []
        pipe = Pipeline(cfg, trainer=InlineTrainer(), on_alarm=events.append, store=None)
        process = pipe.process
        values = f.values[:, j].tolist()
        ts = f.ts.tolist()
        for i in range(rows):
            process(sensor, values[i], ts[i])
            s = pipe.series[sensor]
            in_alarm[i, j] = s.alarm.active
        raised = [e for e in events if e.state == "raised"]
        raises[sensor] = len(raised)
        for e in raised:
            kinds[str(e.kind)] = kinds.get(str(e.kind), 0) + 1
    return SkabRun(name, f.ts, f.anomaly, f.changepoint, in_alarm, raises, kinds, time.perf_counter() - t0)


def run(root: str, cfg_data: dict[str, Any], group: str = "valve1", jobs: int = 1) -> tuple[list[SkabRun], SkabRun | None]:
    names = skab.list_files(root, group)
    if not names:
        raise FileNotFoundError(f"no SKAB files under {Path(root) / group}")
    free = skab.ANOMALY_FREE if (Path(root) / skab.ANOMALY_FREE).is_file() else None
    todo = names + ([free] if free else [])
    if jobs <= 1:
        done = [run_file(root, n, cfg_data) for n in todo]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            done = list(pool.map(run_file, [root] * len(todo), todo, [cfg_data] * len(todo)))
    by_name = {r.name: r for r in done}
    return [by_name[n] for n in names], (by_name[free] if free else None)


FALSE_KINDS = ("early", "held_past_fault", "nuisance")


def false_rows_by_kind(anomaly: np.ndarray, in_alarm: np.ndarray) -> dict[str, int]:
    """The normal rows in alarm, by where their alarm span lies against the labelled rows.

    >>> a = np.array([0, 0, 1, 1, 0, 0, 0, 0], dtype=bool)
    >>> p = np.array([0, 1, 1, 1, 1, 0, 1, 0], dtype=bool)
    >>> false_rows_by_kind(a, p)
    {'early': 1, 'held_past_fault': 1, 'nuisance': 1}
    """
    out = dict.fromkeys(FALSE_KINDS, 0)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], in_alarm.astype(np.int8), [0]))))
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        labelled = np.flatnonzero(anomaly[start:end])
        false = ~anomaly[start:end]
        if labelled.size == 0:
            out["nuisance"] += int(false.sum())
            continue
        out["early"] += int(false[: labelled[0]].sum())
        out["held_past_fault"] += int(false[labelled[0]:].sum())
    return out


def false_alarm_rows(runs: list[SkabRun], sensors: list[str]) -> dict[str, Any]:
    """Where the false-alarm rows are: pooled, and per file and sensor (most first)."""
    part = slice(skab.FIT_ROWS, None)
    pooled = dict.fromkeys(FALSE_KINDS, 0)
    normal = 0
    cells = []
    for r in runs:
        anomaly = r.anomaly[part].astype(bool)
        normal += int((~anomaly).sum())
        for k, n in false_rows_by_kind(anomaly, r.in_alarm[part].any(axis=1)).items():
            pooled[k] += n
        for j, sensor in enumerate(sensors):
            by_kind = false_rows_by_kind(anomaly, r.in_alarm[part, j])
            rows = sum(by_kind.values())
            if rows:
                cells.append({"file": r.name, "sensor": sensor, "rows": rows, **by_kind})
    cells.sort(key=lambda c: (-c["rows"], c["file"], c["sensor"]))
    return {"rows": sum(pooled.values()), "normal_rows": normal, **pooled, "by_file_sensor": cells}


def summarise(runs: list[SkabRun], free: SkabRun | None) -> dict[str, Any]:
    part = slice(skab.FIT_ROWS, None)
    pairs = []
    cps = []
    kinds: dict[str, int] = {}
    per_sensor: dict[str, dict[str, float]] = {}
    for r in runs:
        pooled = r.in_alarm.any(axis=1)
        pairs.append((r.anomaly[part], pooled[part]))
        turned_on = np.zeros_like(pooled)
        turned_on[1:] = pooled[1:] & ~pooled[:-1]
        turned_on[0] = pooled[0]
        cps.append((r.ts[part], r.changepoint[part], turned_on[part]))
        for k, n in r.kinds.items():
            kinds[k] = kinds.get(k, 0) + n
    sensors = list(runs[0].raises) if runs else []
    for j, sensor in enumerate(sensors):
        sc = skab.outlier_score((r.anomaly[part], r.in_alarm[part, j]) for r in runs)
        per_sensor[sensor] = {"f1": sc.f1, "far_pct": sc.far, "mar_pct": sc.mar, "raises": sum(r.raises[sensor] for r in runs)}
    outlier = skab.outlier_score(pairs).as_dict()
    out: dict[str, Any] = {
        "files": len(runs),
        "rows_scored": int(sum(r.anomaly[part].shape[0] for r in runs)),
        "outlier": outlier,
        "changepoint_nab": skab.changepoint_nab(cps),
        "alarms_raised": int(sum(sum(r.raises.values()) for r in runs)),
        "explained_as": kinds,
        "per_sensor": per_sensor,
        "false_alarm_rows": false_alarm_rows(runs, sensors),
        "published_outlier": {k: {"f1": v[0], "far_pct": v[1], "mar_pct": v[2]} for k, v in skab.PUBLISHED_OUTLIER.items()},
        "published_changepoint_nab": dict(skab.PUBLISHED_CHANGEPOINT_NAB),
        "seconds": sum(r.seconds for r in runs),
    }
    if free is not None:
        pooled = free.in_alarm.any(axis=1)[part]
        out["anomaly_free"] = {
            "rows_scored": int(pooled.shape[0]),
            "alarms_raised": int(sum(free.raises.values())),
            "rows_in_alarm_pct": 100.0 * float(pooled.mean()) if pooled.size else 0.0,
            "per_sensor_raises": dict(free.raises),
        }
    return out


def format_summary(s: dict[str, Any]) -> str:
    o = s["outlier"]
    cp = s["changepoint_nab"]
    lines = [
        f"SKAB, {s['files']} files, {s['rows_scored']:,} scored rows, each sensor its own series; rows pooled by OR over sensors",
        "",
        f"{'':28} {'F1':>6} {'FAR %':>7} {'MAR %':>7}    changepoint NAB standard / low_FP / low_FN",
        f"{'this agent (per sensor, OR)':28} {o['f1']:>6.2f} {o['far_pct']:>7.2f} {o['mar_pct']:>7.2f}    "
        f"{cp['standard']:.2f} / {cp['low_fp']:.2f} / {cp['low_fn']:.2f}",
    ]
    for k, v in s["published_outlier"].items():
        cpn = s["published_changepoint_nab"].get(k)
        lines.append(f"{k + ' (published)':28} {v['f1']:>6.2f} {v['far_pct']:>7.2f} {v['mar_pct']:>7.2f}    "
                     + (f"{cpn:.2f}" if cpn is not None else "-"))
    for k, v in s["published_changepoint_nab"].items():
        if k not in s["published_outlier"]:
            lines.append(f"{k + ' (published)':28} {'-':>6} {'-':>7} {'-':>7}    {v:.2f}")
    lines.append("(published: multivariate models on all SKAB experiments; ours: univariate, per sensor, valve1 only)")
    lines.append("")
    lines.append(f"{'sensor':24} {'F1':>6} {'FAR %':>7} {'MAR %':>7} {'raises':>7}")
    for sensor, v in s["per_sensor"].items():
        lines.append(f"{sensor:24} {v['f1']:>6.2f} {v['far_pct']:>7.2f} {v['mar_pct']:>7.2f} {v['raises']:>7}")
    f = s["false_alarm_rows"]
    lines.append(f"false-alarm rows (pooled): {f['rows']:,} of {f['normal_rows']:,} normal: {f['early']} raised early "
                 f"(before a labelled fault), {f['held_past_fault']} held past a fault's end, {f['nuisance']} nuisance")
    top = [f"{c['file']} {c['sensor']} {c['rows']} ({c['early']} / {c['held_past_fault']} / {c['nuisance']})" for c in f["by_file_sensor"][:6]]
    if top:
        lines.append("  most (early / held past / nuisance): " + "; ".join(top))
    lines.append(f"alarms raised: {s['alarms_raised']}, explained as {s['explained_as']}")
    if "anomaly_free" in s:
        a = s["anomaly_free"]
        lines.append(f"anomaly-free recording: {a['alarms_raised']} alarm(s) over {a['rows_scored']:,} rows x 8 sensors, "
                     f"{a['rows_in_alarm_pct']:.2f} % of rows in alarm; per sensor {a['per_sensor_raises']}")
    return "\n".join(lines)
