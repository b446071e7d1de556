"""Blind-spot check: faults injected into each sensor of SKAB's anomaly-free recording.

A quiet result on the anomaly-free recording could come from a sensor that is never
watched. So each sensor in turn gets faults of several shapes, seven episodes of 300 rows
spread over the scored part (rows 1000, 2200, ... 8200), each the size of a multiple of
the spread that sensor showed over the fit rows (its standard deviation there):

* steps of +-6 and +-12 sd (a sudden change that stays for the episode);
* ramps to +-12 sd over 120 s, then held (a change that builds up).

An episode counts as flagged when, at some row of it, the machine is in alarm and the
injected sensor ranks first among its contributions: found, and blamed on the right
sensor. The same count on the recording without injection (``none``) shows how much of a
share is coincidence. Rows go through ``MachineSet.feed_row``, the machine half of the
live path (``skab_machine.replay`` runs the whole of it; the series do not matter here).
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from edge_agent.evaluation import skab

EPISODE_ROWS = 300
FIRST, EVERY = 1000, 1200
SHAPES: dict[str, tuple[float, float]] = {  # name: (size in fit-row sd, ramp seconds; 0 = step)
    "step +6": (6.0, 0.0), "step -6": (-6.0, 0.0), "step +12": (12.0, 0.0), "step -12": (-12.0, 0.0),
    "ramp +12/120s": (12.0, 120.0), "ramp -12/120s": (-12.0, 120.0),
}


def episodes(n_rows: int) -> list[int]:
    return list(range(FIRST, n_rows - EPISODE_ROWS, EVERY))


def inject(f: skab.SkabFile, sensor: int, size_sd: float, ramp_s: float) -> np.ndarray:
    x = f.values.copy()
    sd = float(f.values[: skab.FIT_ROWS, sensor].std())
    for start in episodes(len(x)):
        rows = slice(start, start + EPISODE_ROWS)
        elapsed = f.ts[rows] - f.ts[start]
        shape = np.ones(EPISODE_ROWS) if ramp_s <= 0 else np.minimum(elapsed / ramp_s, 1.0)
        x[rows, sensor] += size_sd * sd * shape
    return x


def run_one(root: str, cfg_data: dict[str, Any], sensor: int | None, shape: str | None) -> dict[str, Any]:
    """Stream the recording (injected, or not for ``sensor=None``); per episode, per sensor:
    the first row at which the machine was in alarm with that sensor ranked first."""
    from edge_agent.config import AgentConfig
    from edge_agent.machines import MachineSet
    from edge_agent.pipeline import InlineTrainer

    f = skab.read_file(root, skab.ANOMALY_FREE)
    x = f.values if sensor is None or shape is None else inject(f, sensor, *SHAPES[shape])
    cfg = AgentConfig.model_validate(cfg_data)
    ms = MachineSet(cfg, InlineTrainer(), on_alarm=lambda e: None)
    ms.declare("bench", f.sensors)
    starts = episodes(len(x))
    first_blamed: dict[int, dict[str, int]] = {s: {} for s in starts}
    in_episode = np.full(len(x), -1)
    for s in starts:
        in_episode[s:s + EPISODE_ROWS] = s
    sensors = f.sensors
    for i in range(len(x)):
        ms.feed_row("bench", list(zip(sensors, x[i].tolist(), strict=True)), float(f.ts[i]))
        ep = in_episode[i]
        if ep < 0:
            continue
        m = ms.machines["bench"]
        if m.alarm.active and m.model is not None:
            top = m.model.detector.contributions()[0].sensor
            first_blamed[ep].setdefault(top, i - ep)
    return {"sensor": None if sensor is None else sensors[sensor], "shape": shape, "episodes": first_blamed}


def run(root: str, cfg_data: dict[str, Any], jobs: int = 1, progress: bool = False) -> dict[str, Any]:
    sensors = skab.read_file(root, skab.ANOMALY_FREE).sensors
    tasks: list[tuple[int | None, str | None]] = [(None, None)] + [(j, s) for j in range(len(sensors)) for s in SHAPES]
    results: list[dict[str, Any]] = []
    if jobs <= 1:
        for i, (j, s) in enumerate(tasks):
            results.append(run_one(root, cfg_data, j, s))
            if progress:
                print(f"blind spot [{i + 1}/{len(tasks)}]", file=sys.stderr, flush=True)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_one, root, cfg_data, j, s) for j, s in tasks]
            for i, fut in enumerate(futures):
                results.append(fut.result())
                if progress:
                    print(f"blind spot [{i + 1}/{len(tasks)}]", file=sys.stderr, flush=True)
    baseline = results[0]["episodes"]
    table: dict[str, dict[str, Any]] = {}
    for r in results[1:]:
        name, shape = r["sensor"], r["shape"]
        eps = r["episodes"]
        delays = [eps[s][name] for s in eps if name in eps[s]]
        table.setdefault(name, {})[shape] = {
            "flagged": len(delays) / len(eps), "median_delay_rows": float(np.median(delays)) if delays else None,
        }
    for name in sensors:
        flagged_anyway = sum(1 for s in baseline if name in baseline[s]) / max(1, len(baseline))
        table[name]["none"] = {"flagged": flagged_anyway, "median_delay_rows": None}
    return {"shapes": list(SHAPES), "episodes": len(baseline), "episode_rows": EPISODE_ROWS, "table": table}


def format_table(bs: dict[str, Any]) -> list[str]:
    shapes = bs["shapes"] + ["none"]
    lines = [f"blind-spot check: {bs['episodes']} episodes of {bs['episode_rows']} rows per sensor and shape, injected into "
             "anomaly-free.csv; share flagged (machine in alarm, that sensor ranked first), median delay in rows"]
    lines.append(f"  {'sensor':22}" + "".join(f"{s:>15}" for s in shapes))
    for name, row in bs["table"].items():
        cells = []
        for s in shapes:
            c = row[s]
            d = "" if c["median_delay_rows"] is None else f" ({c['median_delay_rows']:.0f})"
            cells.append(f"{100 * c['flagged']:>9.0f} %{d:<5}" if d else f"{100 * c['flagged']:>13.0f} %")
        lines.append(f"  {name[:22]:22}" + "".join(f"{c:>15}" for c in cells))
    return lines
