"""The ``edge-agent`` command line."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from edge_agent import __version__
from edge_agent.config import AgentConfig, ConfigError, Issue, load_config, masked_dump


def _load(path: str | None) -> AgentConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def _print_issues(source: str, what: str, issues: list[Issue]) -> None:
    print(f"{source}: {len(issues)} {what}", file=sys.stderr)
    for issue in issues:
        print(f"  {issue}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent import event_loop
    from edge_agent.app import run_agent
    from edge_agent.logsetup import setup_logging
    from edge_agent.preflight import preflight

    cfg = _load(args.config)
    # The checks check-config does, before anything connects: a missing secret or TLS file
    # stops here with its key, file and line, not as a traceback or a reconnect loop.
    report = preflight(cfg, for_run=True)
    if report.errors:
        _print_issues(cfg.source, "problem(s) found before starting (edge-agent check-config shows the same)", report.errors)
        return 2
    setup_logging(cfg.log.level, cfg.log.format)
    for issue in report.warnings:
        logging.getLogger("edge_agent.preflight").warning("%s", issue)
    try:
        return event_loop.run(run_agent(cfg), cfg.event_loop)
    except event_loop.EventLoopUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from edge_agent.preflight import preflight

    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    report = preflight(cfg, for_run=False)
    if report.warnings:
        _print_issues(args.file, "warning(s)", report.warnings)
    if report.errors:
        _print_issues(args.file, "problem(s) that stop `edge-agent run`", report.errors)
        return 2
    if args.series is not None or args.topic is not None:
        return _show_series(cfg, args)
    print(f"# {args.file}: OK (edge-agent {__version__})")
    print(yaml.safe_dump(masked_dump(cfg), sort_keys=False), end="")
    return 0


def _show_series(cfg: AgentConfig, args: argparse.Namespace) -> int:
    from edge_agent.rules import RuleSet, UnknownTopic

    rules = RuleSet(cfg)
    try:
        settings = rules.for_topic(args.topic) if args.topic is not None else rules.resolve(args.series, {})
    except UnknownTopic as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(settings.as_dict(), indent=1))
    else:
        print(settings.describe())
    return 0


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or _load(args.config).state_dir)


def _store(args: argparse.Namespace):
    from edge_agent.model_store import ModelStore

    if getattr(args, "machine", False):
        return ModelStore.for_machines(_state_dir(args) / "machine_models")
    return ModelStore(_state_dir(args) / "models")


def _list_rows(store: Any, key: str) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per stored id (``key``: "series" or "machine"), and what cannot be named.
    Read-only: it reports what the agent would repair or skip at start, and why."""
    from edge_agent.model_store import ModelLoadError

    scan = store.scan(repair=False)
    rows = []
    for sid in scan.series:
        active, problem = store.read_active(sid)
        meta: dict = {}
        problems = [problem] if problem else []
        if active is not None:
            try:
                meta = store.read_meta(sid, active)
            except ModelLoadError as exc:
                problems.append(str(exc))
        if sid in scan.recovered:
            problems.append("series.json missing or corrupt (the agent rewrites it from the versions at start)")
        rows.append({key: sid, "active": active, "versions": store.versions(sid), "detector": meta.get("detector"),
                     "status": "ok" if not problems else "problem", "problems": problems})
    return rows, [p for p in scan.problems if "not loaded" in p]


def cmd_models(args: argparse.Namespace) -> int:
    from edge_agent.model_store import ModelLoadError, ModelStore

    store = _store(args)
    if args.action == "list":
        rows, unnamed = _list_rows(store, "series")
        # Machines (docs/machines.md) beside the series, when the agent has stored any.
        machines_root = _state_dir(args) / "machine_models"
        mrows: list[dict[str, Any]] = []
        if machines_root.is_dir():
            mrows, munnamed = _list_rows(ModelStore.for_machines(machines_root), "machine")
            unnamed += munnamed
        for p in unnamed:
            print(f"not a loadable series or machine: {p}", file=sys.stderr)
        if args.json:
            print(json.dumps(rows + mrows, indent=1))
        else:
            for key, listed in (("series", rows), ("machine", mrows)):
                if key == "machine" and not listed:
                    continue
                if key == "machine":
                    print()
                print(f"{key.upper():40} {'ACTIVE':>6} {'VERSIONS':>8}  {'DETECTOR':16} STATUS")
                for r in listed:
                    print(f"{r[key][:40]:40} {r['active'] or '-':>6} {len(r['versions']):>8}  {str(r['detector']):16} "
                          + ("ok" if not r["problems"] else "; ".join(r["problems"])[:200]))
        return 1 if unnamed or any(r["problems"] for r in rows + mrows) else 0
    what = "machine" if args.machine else "series"
    if not args.series:
        print(f"models show/rollback: give a {what} id", file=sys.stderr)
        return 2
    try:
        if args.action == "show":
            version = args.version or store.active_version(args.series)
            if version is None:
                print(f"{what} {args.series!r} has no model", file=sys.stderr)
                return 1
            meta = store.read_meta(args.series, version)
            meta["active"] = version == store.active_version(args.series)
            print(json.dumps(meta, indent=1, sort_keys=True))
            return 0
        model = store.rollback(args.series, args.version)
        print(f"{what} {args.series!r}: version {model.version} is now active (restart the agent"
              + (")" if args.machine else ", or use the rollback command topic, for a running agent to pick it up)"))
        return 0
    except ModelLoadError as exc:
        print(str(exc), file=sys.stderr)
        return 1


def cmd_simulate(args: argparse.Namespace) -> int:
    from edge_agent.simulator import main as sim_main

    return sim_main(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from edge_agent.demo import main as demo_main

    return demo_main(args)


def _plugin(module: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]] | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return mod.add_arguments, mod.run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent", description="Anomaly-detection agent for plant gateways.")
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the agent")
    r.add_argument("-c", "--config", required=True, help="YAML config file (EDGE_AGENT__... environment overrides apply)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser(
        "check-config",
        help="check a config file as `run` would, and print it resolved (secrets masked)",
        description="Validate FILE and everything it points at (secret and TLS files, the state "
        "directory, optional packages), as `run` does before it connects. Exit 0 when `run` "
        "would start, 2 otherwise, with every problem named by key, file and line.",
    )
    c.add_argument("file", help="YAML config file (EDGE_AGENT__... environment overrides apply)")
    which = c.add_mutually_exclusive_group()
    which.add_argument("--series", metavar="ID", help="print the settings the rules resolve for this series id, and which rule set each")
    which.add_argument("--topic", metavar="TOPIC", help="as --series, for the series a reading on this MQTT topic belongs to "
                       "(rules that match topic fields such as sensor: need it)")
    c.add_argument("--json", action="store_true", help="with --series/--topic: print JSON instead of a table")
    c.set_defaults(func=cmd_check_config)

    m = sub.add_parser("models", help="inspect or roll back the local model store (offline)")
    m.add_argument("action", choices=["list", "show", "rollback"], help="list all series, show one model's metadata, or roll one back")
    m.add_argument("series", nargs="?", help="series id, e.g. m1/temp, or with --machine a machine id, e.g. line1/p7 (show, rollback)")
    m.add_argument("--machine", action="store_true", help="show, rollback: the id is a machine's (state_dir/machine_models); list shows both")
    m.add_argument("--version", type=int, help="version to show or roll back to (default: active / previous)")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("-c", "--config", help="take the state directory from this config file")
    src.add_argument("--state-dir", help="the agent's state directory (holds models/)")
    m.add_argument("--json", action="store_true", help="list: print JSON instead of a table")
    m.set_defaults(func=cmd_models)

    s = sub.add_parser("simulate", help="publish realistic sensor readings with injected faults")
    from edge_agent.simulator import add_arguments as sim_args

    sim_args(s)
    s.set_defaults(func=cmd_simulate)

    d = sub.add_parser("demo", help="embedded broker + agent + simulator, all in one")
    d.add_argument("--broker", help="HOST:PORT of an existing broker (default: start an embedded one)")
    d.add_argument("--machines", type=int, default=3, help="simulated machines, 3 sensors each (default %(default)s)")
    d.add_argument("--rate", type=float, default=20.0, help="readings per second per sensor (default %(default)s)")
    d.add_argument("--http-port", type=int, default=8000, help="status page port, or the next free one (default %(default)s)")
    d.add_argument("--warmup", type=float, default=30.0, help="seconds before the simulator injects faults")
    d.add_argument("--pumps", type=int, default=1, help="simulated pumps whose sensors move together; their relation breaks (default %(default)s)")
    d.add_argument("--state-dir", default="./demo-state", help="where the demo keeps models and its outbox (default %(default)s)")
    d.add_argument("--sparkplug", action="store_true", help="the plant speaks Sparkplug B, and the agent publishes as a Sparkplug edge node")
    d.set_defaults(func=cmd_demo)

    for name, module, help_text in (
        ("evaluate", "edge_agent.evaluation.evaluate", "score detectors on NAB, SKAB or the fault-scenario suite"),
        ("sign-command", "edge_agent.command_auth", "sign a remote command for mosquitto_pub"),
        ("keygen", "edge_agent.keygen", "create the command HMAC key and the HTTP token files (mode 0600)"),
    ):
        plugin = _plugin(module)
        if plugin is None:
            continue
        sp = sub.add_parser(name, help=help_text)
        plugin[0](sp)
        sp.set_defaults(func=plugin[1])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
