"""`make bench` entry point: runs the parts, writes bench/report.json and bench/report.md,
appends the headline figures to bench/history.json, and prints the headline ratios.

    python -m bench.run                      # all parts
    python -m bench.run --only scoring,memory --quick
    python -m bench.run --label "after outbox fix"   # name this run in the before/after table
    python -m bench.run --only soak --minutes 5      # the soak (60 min by default; never in the default run)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import cleanup_all, machine_info

PARTS = ["scoring", "machines", "memory", "startup", "throughput", "latency", "sideload", "http", "sparkplug", "livestate"]
EXTRA_PARTS = ["soak"]  # selected with --only: an hour long
MODULES = {**{p: f"bench.part_{p}" for p in PARTS}, "soak": "bench.soak"}
HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help=f"comma-separated parts: {','.join(PARTS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="smaller/shorter runs (smoke test; figures are noisier)")
    ap.add_argument("--label", default="", help="name of this run in bench/history.json (before/after table)")
    ap.add_argument("--no-history", action="store_true", help="do not append to bench/history.json")
    ap.add_argument("--out", default=str(HERE), help="directory for report.json / report.md (default: bench/)")
    ap.add_argument("--minutes", type=float, default=None, help="length of the soak part (default 60; 5 with --quick)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()] or PARTS
    bad = [p for p in parts if p not in MODULES]
    if bad:
        ap.error(f"unknown part(s) {bad}; known: {PARTS + EXTRA_PARTS}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / "report.json"
    report: dict[str, Any] = {}
    if report_path.exists():
        try:
            report = json.loads(report_path.read_text())
        except ValueError:
            report = {}
    report.setdefault("parts", {})
    report["machine"] = machine_info()
    report["quick"] = args.quick
    failed = []
    try:
        for p in parts:
            print(f"== {p} ...", flush=True)
            t0 = time.monotonic()
            try:
                mod = importlib.import_module(MODULES[p])
                res = mod.run(quick=args.quick, minutes=args.minutes) if p == "soak" else mod.run(quick=args.quick)
                res["measured_at"] = report["machine"]["date"]
                res["quick"] = args.quick
                res["part_seconds"] = round(time.monotonic() - t0, 1)
                report["parts"][p] = res
                print(f"   {p} done in {time.monotonic() - t0:.0f}s", flush=True)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                failed.append(p)
                traceback.print_exc()
                report["parts"][p] = {"error": f"{type(exc).__name__}: {exc}", "measured_at": report["machine"]["date"]}
            finally:
                cleanup_all()
    except KeyboardInterrupt:
        print("interrupted: stopping every process the bench started", file=sys.stderr)
        cleanup_all()
        return 130
    from bench import report as rep

    headline = rep.headline(report)
    report["headline"] = headline
    history_path = out_dir / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    if not args.no_history:
        history.append({
            "label": args.label or "run",
            "date": report["machine"]["date"],
            "git_commit": report["machine"]["git_commit"],
            "edge_agent_dirty": report["machine"]["edge_agent_dirty"],
            "parts": parts,
            "quick": args.quick,
            "figures": {k: v["value"] for k, v in headline.items() if k.split(".")[0] in parts or v.get("part") in parts},
        })
        history_path.write_text(json.dumps(history, indent=1) + "\n")
    report_path.write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out_dir / "report.md").write_text(rep.markdown(report, history))
    print()
    print(rep.headline_text(headline))
    print(f"\nwrote {report_path} and {out_dir / 'report.md'}")
    if failed:
        print(f"FAILED parts: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
