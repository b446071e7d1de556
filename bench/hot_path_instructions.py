"""Instructions per reading of the hot path (``Pipeline.process``, ``Ingest.handle``), counted
by valgrind's callgrind, for this tree and a git revision side by side.

On this shared 2-core VM wall-clock A/B runs of the hot path drift by more than the changes
worth measuring (handle min 2.4-3.2 us from run to run, the same code). Instruction counts do
not: a run with N and one with 3N calls, the difference divided by 2N, is the cost per call,
repeatable to about +-300 instructions of ~60,000 (PYTHONHASHSEED=0, the collector off,
timestamps with the same digits run to run). The figure includes the harness's own per-call
work (building the arguments, json.dumps for handle), the same on both sides: compare the
difference, not the absolute value. Not part of ``make bench`` (callgrind takes ~1 min per
figure).

    .venv/bin/python -m bench.hot_path_instructions                 # this tree vs HEAD
    .venv/bin/python -m bench.hot_path_instructions --base main --mode handle
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKLOAD = r'''
import gc, json, sys, time
gc.disable()
import numpy as np
from bench import part_scoring as ps
from bench.common import series_id, series_topic
mode, n = sys.argv[1], int(sys.argv[2])
pipe = ps._trained_pipeline(100, [])
vals = ps.training_values(np.random.default_rng(3), n)
vals[ps.anomaly_mask(n, 100)] = 60.0
ts0 = round(time.time() / 1e5) * 1e5  # the same digits run to run: json.dumps does the same work
if mode == "process":
    args = [(series_id(i % 100), float(vals[i]), ts0 + i * 1e-4) for i in range(n)]
    f = pipe.process
    for a, b, c in args:
        f(a, b, c)
else:
    from edge_agent.ingest import Ingest
    ing = Ingest(pipe.cfg, pipe)
    msgs = [(series_topic(i % 100), json.dumps({"value": float(vals[i]), "ts": ts0 + i * 1e-4}).encode()) for i in range(n)]
    h = ing.handle
    for t, p in msgs:
        h(t, p)
    assert not ing.rejected, ing.rejected
'''


def instructions(tree: Path, mode: str, n: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(tree)}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(WORKLOAD)
    try:
        res = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, fh.name, mode, str(n)],
            capture_output=True, text=True, cwd=tree, env=env, check=True,
        )
    finally:
        os.unlink(fh.name)
    m = re.search(r"refs:\s*([\d,]+)", res.stderr)
    if not m:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{res.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def per_call(tree: Path, mode: str, n: int) -> int:
    return (instructions(tree, mode, 3 * n) - instructions(tree, mode, n)) // (2 * n)


def checkout(rev: str, into: Path) -> Path:
    """The revision's edge_agent, bench and tests/helpers.py (what the workload imports)."""
    archive = subprocess.run(["git", "archive", rev, "edge_agent", "bench", "tests/helpers.py"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hot_path_instructions", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD", help="git revision to compare with (default: HEAD)")
    ap.add_argument("--mode", choices=["process", "handle", "both"], default="both")
    ap.add_argument("-n", type=int, default=10_000, help="calls in the short run (the long run makes 3n)")
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    modes = ["process", "handle"] if args.mode == "both" else [args.mode]
    with tempfile.TemporaryDirectory() as tmp:
        base = checkout(args.base, Path(tmp))
        for mode in modes:
            b, t = per_call(base, mode, args.n), per_call(REPO, mode, args.n)
            print(f"{mode:8} {args.base}: {b:,}  this tree: {t:,}  instructions per call ({t - b:+,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
