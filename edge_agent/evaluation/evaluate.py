"""``edge-agent evaluate``: replay data through the live streaming path and score what it alarms on.

Three kinds of data, one command:

* **NAB** (``--data DIR --labels windows.json``): every row goes through ``Pipeline.process``
  exactly as a live reading does (same ring buffer, same inline fit on the first
  training window, same raise / hold / clear state machine), so the numbers describe what the
  agent would have alarmed on. The training window is the benchmark's own split, as for SKAB:
  NAB's probationary period (the first 15 % of each file, at most 750 rows), which NAB gives
  every detector to learn in; ``--nab-split agent`` uses the agent's ``min_train_samples``
  (500) instead, which leaves the early windows of NAB's short files inside the training. A detection is the reading at which an
  alarm was *raised*; a still-raised alarm does not fire again, exactly as an operator would
  see it. Files are the keys of the labels file (NAB's ``windows.json`` layout), scored in a
  process pool because series are independent. ``--loco KEY=v1,v2,...`` adds NAB's
  leave-one-category-out figure for that setting (``loco.py``).
* **SKAB** (``--skab DIR``): each sensor of the pump test bench its own series, the
  benchmark's split and metrics, beside the published results (``skab_eval.py``); with
  ``--machine``, the bench's eight sensors as one machine model instead (``skab_machine.py``).
* **Fault scenarios** (``--scenarios small|full``): generated signals with known faults:
  faults caught, held to their end, detection delay, nuisance alarms (``scenarios.py``);
  ``--scenarios unseen``: the same on six fault kinds no default was chosen on (``unseen_faults.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge_agent.evaluation import loco, nab, scenarios, unseen_faults


@dataclass
class FileResult:
    file: str
    rows: int
    windows: list[tuple[int, int]]
    detections: list[int]  # row indices where an alarm was raised
    seconds: float


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    keys = dotted.split(".")
    for key in keys[:-1]:
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            nxt = node[key] = {}
        node = nxt
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` items as {dotted key: YAML scalar}; ValueError naming a bad item."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def build_config_data(config_path: str | None, detector: str | None, overrides: list[str]) -> dict[str, Any]:
    """The config as plain data: defaults (or a file), then ``--detector``, then ``--set`` k=v.

    Values are YAML scalars, as for environment overrides (``k=4`` is an int, ``x=true`` a bool).
    Raises ``ConfigError`` / ``ValueError`` naming the bad key.
    """
    from edge_agent import detectors
    from edge_agent.config import AgentConfig, ConfigError, load_config

    data: dict[str, Any] = {}
    if config_path:
        data = load_config(config_path, environ={}).model_dump(mode="json")
    if detector:
        _set_path(data, "detector.name", detector)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_path(data, key.strip(), value)
    cfg = AgentConfig.model_validate(data)  # ValidationError names the key path
    name = cfg.detector.name
    if name not in detectors.REGISTRY:
        if detector or "detector" in data and "name" in data["detector"]:
            raise ConfigError("(evaluate)", [("detector.name", f"unknown detector {name!r}; known: {', '.join(sorted(detectors.REGISTRY))}")])
        # The config's built-in default may be a placeholder; evaluate the registry's default.
        _set_path(data, "detector.name", detectors.DEFAULT)
    return AgentConfig.model_validate(data).model_dump(mode="json")


SPLITS = ("probation", "agent")


def train_rows(split: str, rows: int, cfg_data: dict[str, Any]) -> int:
    """Readings the detector learns from before it scores: NAB's probation, or the agent's own."""
    if split == "probation":
        return max(2, nab.probation_rows(rows))
    if split == "agent":
        return int(cfg_data["detector"]["min_train_samples"])
    raise ValueError(f"unknown NAB split {split!r}: expected one of {', '.join(SPLITS)}")


def evaluate_file(data_dir: str, name: str, windows: list[tuple[float, float]], cfg_data: dict[str, Any],
                  split: str = "probation") -> FileResult:
    """Stream one CSV through a fresh ``Pipeline`` and collect the rows that raised an alarm."""
    from edge_agent.config import AgentConfig
    from edge_agent.pipeline import AlarmEvent, InlineTrainer, Pipeline
    from edge_agent.replay import ReplayGuard, Route

    ts, values = nab.read_csv(Path(data_dir) / name)
    detector = {**cfg_data["detector"], "min_train_samples": train_rows(split, len(values), cfg_data)}
    cfg = AgentConfig.model_validate({**cfg_data, "detector": detector})
    events: list[AlarmEvent] = []
    pipe = Pipeline(cfg, trainer=InlineTrainer(), on_alarm=events.append, store=None)
    # Rows older than an earlier one go through the live agent's replay rule (replay.py), with
    # the file's own timestamps as receive time: refused as a replay, or followed as a step.
    guard, route = ReplayGuard(cfg.ingest.replay_window_s, cfg.ingest.clock_step_after_s), Route(None, name)
    inf = float("inf")
    raised_rows: list[int] = []
    t0 = time.perf_counter()
    process = pipe.process
    held: list[int] = []  # rows the guard holds, to credit a later alarm to its own row
    for i in range(len(values)):
        t = float(ts[i])
        if t < route.newest or route.held is not None:
            out, _ = guard.accept(route, float(values[i]), t, inf, t)
            held.append(i)
            if route.held is None:  # decided: scored (a clock step) or refused (a replay)
                rows, held = held[len(held) - len(out):], []
            else:
                continue
        else:
            route.newest = t
            out, rows = [(float(values[i]), t)], [i]
        for row, (v, tr) in zip(rows, out, strict=True):
            n = len(events)
            process(name, v, tr)
            if len(events) != n:
                # At most one event per reading; keep the raising ones, by row.
                raised_rows.extend(row for e in events[n:] if e.state == "raised")
    seconds = time.perf_counter() - t0
    return FileResult(name, len(values), nab.window_indices(ts, windows), raised_rows, seconds)


def evaluate(
    data_dir: str,
    labels: dict[str, list[tuple[float, float]]],
    cfg_data: dict[str, Any],
    jobs: int = 1,
    progress: bool = False,
    split: str = "probation",
) -> list[FileResult]:
    names = sorted(labels)
    missing = [n for n in names if not (Path(data_dir) / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} labelled file(s) not under {data_dir}: {', '.join(missing[:5])}")
    # Biggest files first, so the pool does not end waiting on one long file.
    order = sorted(names, key=lambda n: -(Path(data_dir) / n).stat().st_size)
    results: dict[str, FileResult] = {}
    done = 0

    def note(r: FileResult) -> None:
        nonlocal done
        done += 1
        results[r.file] = r
        if progress:
            print(f"[{done}/{len(names)}] {r.file}: {r.rows} rows, {len(r.detections)} alarms, {r.seconds:.1f}s", file=sys.stderr, flush=True)

    if jobs <= 1 or len(names) <= 1:
        for n in order:
            note(evaluate_file(data_dir, n, labels[n], cfg_data, split))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(evaluate_file, data_dir, n, labels[n], cfg_data, split) for n in order]
            for f in futures:
                note(f.result())
    return [results[n] for n in names]


def summarise(results: list[FileResult]) -> dict[str, Any]:
    """Per file and total: NAB scores for every profile, window recall, alarm count."""
    files = []
    for r in results:
        per = {p.name: nab.score_file(r.rows, r.windows, r.detections, p) for p in nab.PROFILES}
        std = per[nab.STANDARD.name]
        files.append({
            "file": r.file,
            "rows": r.rows,
            "windows": std.windows,
            "windows_detected": std.tp,
            "window_recall": (std.tp / std.windows) if std.windows else None,
            "false_positives": std.fp,
            "alarms": len(r.detections),
            "raw": {p: s.raw for p, s in per.items()},
            # A file without windows has no normalised score of its own (null == perfect).
            "score": {p: (nab.normalized([s.raw], [s.windows], nab.PROFILES[i]) if s.windows else None) for i, (p, s) in enumerate(per.items())},
            "us_per_reading": 1e6 * r.seconds / max(1, r.rows),
        })
    total_windows = sum(f["windows"] for f in files)
    detected = sum(f["windows_detected"] for f in files)
    total = {
        "files": len(files),
        "rows": sum(f["rows"] for f in files),
        "windows": total_windows,
        "windows_detected": detected,
        "window_recall": detected / total_windows if total_windows else None,
        "false_positives": sum(f["false_positives"] for f in files),
        "alarms": sum(f["alarms"] for f in files),
        "score": {p.name: nab.normalized([f["raw"][p.name] for f in files], [f["windows"] for f in files], p) for p in nab.PROFILES},
        "us_per_reading": 1e6 * sum(r.seconds for r in results) / max(1, sum(r.rows for r in results)),
    }
    return {"files": files, "total": total}


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def format_table(summary: dict[str, Any]) -> str:
    head = f"{'file':<52} {'rows':>6} {'win':>4} {'hit':>4} {'FP':>4} {'alarms':>6} {'standard':>9} {'low_FP':>8} {'low_FN':>8} {'recall':>7}"
    lines = [head, "-" * len(head)]

    def row(label: str, d: dict[str, Any]) -> str:
        s = d["score"]
        return (f"{label:<52} {d['rows']:>6} {d['windows']:>4} {d['windows_detected']:>4} {d['false_positives']:>4} {d['alarms']:>6} "
                f"{_fmt(s['standard']):>9} {_fmt(s['reward_low_FP_rate']):>8} {_fmt(s['reward_low_FN_rate']):>8} {_fmt(d['window_recall'], '.2f'):>7}")

    for f in summary["files"]:
        lines.append(row(f["file"], f))
    lines.append("-" * len(head))
    lines.append(row(f"TOTAL ({summary['total']['files']} files)", summary["total"]))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_agent.evaluation import skab_machine

    parser.add_argument("--data", default=None, help="NAB: folder holding the CSV files (timestamp,value)")
    parser.add_argument("--labels", default=None, help="NAB: windows.json: {relative file: [[start, end], ...]}")
    skab_machine.add_arguments(parser)  # --skab DIR, and --machine / --lofo / --blind-spot
    parser.add_argument("--scenarios", nargs="?", const="full", default=None, choices=[*sorted(scenarios.SIZES), "unseen"],
                        help="the generated fault-scenario suite (default size: full); unseen: six fault kinds no default "
                             "was chosen on (unseen_faults.py)")
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="scenarios: run only the scenarios whose name contains TEXT (e.g. wander/spike/s0.5/dt60/r0)")
    parser.add_argument("--suite-seed", type=int, default=0, metavar="N",
                        help="scenarios: draw the suite's signals from seed N (default 0, the figures in docs/detectors.md); "
                             "other seeds are realisations no default was chosen on")
    parser.add_argument("--nab-split", default="probation", choices=SPLITS,
                        help="NAB: what the detector learns from before it scores: NAB's probationary period "
                             "(first 15%% of each file, at most 750 rows; default), or the agent's min_train_samples")
    parser.add_argument("--loco", default=None, metavar="KEY=V1,V2,...",
                        help="NAB: also report leave-one-category-out tuning of this setting, e.g. detector.params.threshold=0.8,1,1.25")
    parser.add_argument("--detector", default=None, help="detector name (default: the config's detector.name)")
    parser.add_argument("--config", default=None, help="agent YAML config to start from (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. detector.params.k=4 or alarms.clear_after=20 (repeatable)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default: up to 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _describe(cfg_data: dict[str, Any]) -> dict[str, Any]:
    return {
        "detector": cfg_data["detector"]["name"],
        "params": cfg_data["detector"]["params"],
        "min_train_samples": cfg_data["detector"]["min_train_samples"],
        "clear_after": cfg_data["alarms"]["clear_after"],
        "hold_ratio": cfg_data["alarms"]["hold_ratio"],
    }


def _header(summary: dict[str, Any]) -> str:
    return (f"detector={summary['detector']} params={json.dumps(summary['params'])} min_train_samples={summary['min_train_samples']} "
            f"hold_ratio={summary['hold_ratio']} clear_after={summary['clear_after']}")


def run(args: argparse.Namespace) -> int:
    from edge_agent.config import ConfigError

    if getattr(args, "skab", None) and args.machine:
        from edge_agent.evaluation import skab_machine

        try:
            overrides = parse_overrides(args.overrides)
        except ValueError as exc:
            print(f"evaluate: {exc}", file=sys.stderr)
            return 2
        return skab_machine.run(args, overrides)
    modes = [m for m in ("nab", "skab", "scenarios") if (m == "nab" and (args.data or args.labels)) or getattr(args, m, None)]
    if len(modes) != 1:
        print("evaluate: give one of --data DIR --labels FILE (NAB), --skab DIR [--machine], or --scenarios", file=sys.stderr)
        return 2
    try:
        cfg_data = build_config_data(args.config, args.detector, args.overrides)
    except (ConfigError, ValueError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if modes[0] == "skab":
        return _run_skab(args, cfg_data, t0)
    if modes[0] == "scenarios":
        return _run_scenarios(args, cfg_data, t0)
    if not (args.data and args.labels):
        print("evaluate: NAB needs both --data and --labels", file=sys.stderr)
        return 2
    try:
        labels = nab.load_windows(args.labels)
    except (OSError, ValueError) as exc:
        print(f"evaluate: cannot read labels {args.labels}: {exc}", file=sys.stderr)
        return 2
    grid = None
    if args.loco:
        try:
            grid = loco.parse_grid(args.loco)
            for value in grid[1]:
                build_config_data(args.config, args.detector, [*args.overrides, f"{grid[0]}={value}"])
        except (ConfigError, ValueError) as exc:
            print(f"evaluate: {exc}", file=sys.stderr)
            return 2
    try:
        results = evaluate(args.data, labels, cfg_data, jobs=args.jobs, progress=not args.quiet, split=args.nab_split)
        summary = summarise(results)
        if grid is not None:
            key, values = grid
            per_value = {}
            for value in values:
                if not args.quiet:
                    print(f"[loco] {key}={value}", file=sys.stderr, flush=True)
                cfg_v = build_config_data(args.config, args.detector, [*args.overrides, f"{key}={value}"])
                per_value[value] = summarise(evaluate(args.data, labels, cfg_v, jobs=args.jobs, split=args.nab_split))
            summary["loco"] = {"key": key, **{p.name: loco.leave_one_category_out(per_value, p) for p in nab.PROFILES}}
    except (OSError, ValueError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    summary.update(_describe(cfg_data))
    summary["nab_split"] = args.nab_split
    summary["wall_seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print(_header(summary) + (" training=NAB probation (15%, <= 750 rows)" if args.nab_split == "probation" else ""))
        print(format_table(summary))
        print(f"{summary['total']['us_per_reading']:.1f} us/reading through Pipeline.process, {summary['wall_seconds']:.1f}s wall")
        if "loco" in summary:
            print(loco.format_report(summary["loco"]["key"], {p.name: summary["loco"][p.name] for p in nab.PROFILES}))
    return 0


def _run_skab(args: argparse.Namespace, cfg_data: dict[str, Any], t0: float) -> int:
    from edge_agent.evaluation import skab_eval

    try:
        runs, free = skab_eval.run(args.skab, cfg_data, jobs=args.jobs)
    except (OSError, ValueError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    summary = {**_describe(cfg_data), **skab_eval.summarise(runs, free), "wall_seconds": time.perf_counter() - t0}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(_header(summary))
        print(skab_eval.format_summary(summary))
        print(f"{summary['wall_seconds']:.1f}s wall")
    return 0


def _run_scenarios(args: argparse.Namespace, cfg_data: dict[str, Any], t0: float) -> int:
    seed = getattr(args, "suite_seed", 0)
    if seed < 0:
        print(f"evaluate: --suite-seed must be 0 or more, not {seed}", file=sys.stderr)
        return 2
    if args.scenarios == "unseen":
        suite = unseen_faults.build_suite(seed=seed)
    else:
        suite = scenarios.build_suite(args.scenarios, seed=seed)
    if args.only:
        suite = [sc for sc in suite if args.only in sc.name]
        if not suite:
            print(f"evaluate: no scenario name contains {args.only!r}", file=sys.stderr)
            return 2
    results = scenarios.run_suite(suite, cfg_data, jobs=args.jobs, progress=not args.quiet)
    summary = {**_describe(cfg_data), "size": args.scenarios, "seed": seed, **scenarios.summarise(results), "wall_seconds": time.perf_counter() - t0}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(_header(summary))
        print(scenarios.format_summary(summary))
        print(f"{summary['wall_seconds']:.1f}s wall")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent evaluate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
