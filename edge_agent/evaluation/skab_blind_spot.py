"""Blind-spot check: faults injected into each sensor of SKAB's anomaly-free recording.

A quiet result on the anomaly-free recording could come from a sensor that is never
watched. So each sensor in turn gets faults of several shapes, seven episodes of 300 rows
spread over the scored part (rows 1000, 2200, ... 8200), each the size of a multiple of
the spread that sensor showed over the fit rows (its standard deviation there):

* steps of +-6 and +-12 sd (a sudden change that stays for the episode);
* ramps to +-12 sd over 120 s, then held (a change that builds up).

Sized in sd, a ramp says nothing about whether it is fast *for that sensor*: 12 sd in two
minutes is slow for a sensor that normally moves several sd a minute. So the check also
sizes ramps in the sensor's **normal drift rate**: how far it moves in a minute over the fit
rows (the standard deviation of its 60-row differences), per minute:

* ramps at +-3 and +-6 times that rate for 120 s, then held.

An episode counts as flagged when, at some row of it, the machine is in an alarm raised
within the episode and the injected sensor ranks first among its contributions: found, and
blamed on the right sensor. The same count on the recording without injection (``none``) shows how much of a
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
DRIFT_LAG_S = 60.0
# name: (size, ramp seconds (0: a step), unit: "sd" = the fit rows' standard deviation,
# "rate" = the fit rows' normal movement in DRIFT_LAG_S, per DRIFT_LAG_S of ramp)
SHAPES: dict[str, tuple[float, float, str]] = {
    "step +6": (6.0, 0.0, "sd"), "step -6": (-6.0, 0.0, "sd"), "step +12": (12.0, 0.0, "sd"), "step -12": (-12.0, 0.0, "sd"),
    "ramp +12/120s": (12.0, 120.0, "sd"), "ramp -12/120s": (-12.0, 120.0, "sd"),
    "ramp +3 rate": (3.0, 120.0, "rate"), "ramp -3 rate": (-3.0, 120.0, "rate"),
    "ramp +6 rate": (6.0, 120.0, "rate"), "ramp -6 rate": (-6.0, 120.0, "rate"),
}


def episodes(n_rows: int) -> list[int]:
    return list(range(FIRST, n_rows - EPISODE_ROWS, EVERY))


def drift_per_lag(f: skab.SkabFile, sensor: int) -> float:
    """The sensor's normal movement in ``DRIFT_LAG_S``: the sd of its differences over that
    many seconds of the fit rows (1 Hz rows here)."""
    fit = f.values[: skab.FIT_ROWS, sensor]
    lag = max(1, round(DRIFT_LAG_S / float(np.median(np.diff(f.ts[: skab.FIT_ROWS])))))
    return float(np.std(fit[lag:] - fit[:-lag]))


def inject(f: skab.SkabFile, sensor: int, size: float, ramp_s: float, unit: str = "sd") -> np.ndarray:
    x = f.values.copy()
    if unit == "rate":  # size x the normal movement per DRIFT_LAG_S, for ramp_s
        total = size * drift_per_lag(f, sensor) * ramp_s / DRIFT_LAG_S
    else:
        total = size * float(f.values[: skab.FIT_ROWS, sensor].std())
    for start in episodes(len(x)):
        rows = slice(start, start + EPISODE_ROWS)
        elapsed = f.ts[rows] - f.ts[start]
        shape = np.ones(EPISODE_ROWS) if ramp_s <= 0 else np.minimum(elapsed / ramp_s, 1.0)
        x[rows, sensor] += total * shape
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
        # Raised within the episode: an alarm carried over from before it (the end of the
        # previous episode, a step back) is not this episode's finding.
        if m.alarm.active and m.model is not None and m.alarm.raised_ts is not None and m.alarm.raised_ts >= f.ts[ep]:
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
    f = skab.read_file(root, skab.ANOMALY_FREE)
    scale = {name: {"sd": float(f.values[: skab.FIT_ROWS, j].std()), "drift_per_60s": drift_per_lag(f, j)} for j, name in enumerate(sensors)}
    return {"shapes": list(SHAPES), "episodes": len(baseline), "episode_rows": EPISODE_ROWS, "table": table, "scale": scale}


def format_table(bs: dict[str, Any]) -> list[str]:
    shapes = bs["shapes"] + ["none"]
    lines = [f"blind-spot check: {bs['episodes']} episodes of {bs['episode_rows']} rows per sensor and shape, injected into "
             "anomaly-free.csv; share flagged (machine in alarm, that sensor ranked first), median delay in rows",
             "  (sd: the fit rows' standard deviation; rate: ramps at that many times the sensor's normal movement per minute, for 120 s)"]
    lines.append(f"  {'sensor':22}" + "".join(f"{s:>15}" for s in shapes))
    for name, row in bs["table"].items():
        cells = []
        for s in shapes:
            c = row[s]
            d = "" if c["median_delay_rows"] is None else f" ({c['median_delay_rows']:.0f})"
            cells.append(f"{100 * c['flagged']:>9.0f} %{d:<5}" if d else f"{100 * c['flagged']:>13.0f} %")
        lines.append(f"  {name[:22]:22}" + "".join(f"{c:>15}" for c in cells))
    return lines
