"""Bytecodes per reading of ``RobustDetector.score_one``, counted, on three streams.

Wall-clock timings of robust's per-reading path on this shared 2-core VM move by more than
the changes worth measuring (the p99 of one tree reads 4.8-6.4 us from run to run). A count of
the bytecodes each ``score_one`` call executes does not move: ``sys.settrace`` with
``f_trace_opcodes`` counts one event per bytecode in every Python frame the call enters
(C functions such as ``math.exp`` count as the one call that reaches them). Deterministic,
so a restructuring's saving can be read exactly; it is not time (a bytecode that calls into C
or allocates costs more than a compare), so check a kept change with the bench's timing too.

Streams, each one reading a minute from a fixed time (the bench starts from ``time.time()``;
a fixed start makes the count repeatable; the time of day matters only where a daily profile
serves):

* ``bench``: ``bench/part_scoring.py``'s, exactly: fit on ``training_values(rng(1), 2000)``
  with its timestamps, 5,000 warm-up readings of its stream (uniform 19..21, 1 % at 60), then
  ``--n`` counted readings (the p99 of ``make bench`` is this stream's);
* ``daily``: a daily cycle (amplitude 3, gaussian noise 0.3) with 1 % spikes; the fit's
  window (2,000 readings) shows the sinusoid, and by the counted readings the daily profile
  serves, the predictor is faster than the model of normal (short-term level, slope and the
  spike judged from both sides on);
* ``walk``: a random walk (steps of sd 0.05) under gaussian noise 0.1, with 1 % spikes (the
  predictor fast, the same three channels on, no profile serving).

Per stream: mean / p50 / p95 / p99 / max bytecodes a reading, and per label (what the reading
did: the part of the slow cycle, as ``part_scoring._robust_p99`` labels them, and whether it
taught the daily profile) the share, median and p99, and its share of the slowest 1 % (what
sets the p99). ``--by-function`` adds where the
bytecodes go (per function, summed over the counted readings, per reading).

    PYTHONPATH=. .venv/bin/python -m bench.robust_opcount                # this tree
    PYTHONPATH=. .venv/bin/python -m bench.robust_opcount --base /tmp/base_tree --n 20000

``--base`` runs the same count on another checkout (its ``edge_agent`` first on the path) and
prints both side by side. Not part of ``make bench`` nor of the tests (~10 s per stream and
tree at the default ``--n``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import numpy as np

T0 = 1.7e9  # a fixed start (see above)
STREAMS = ("bench", "daily", "walk")


def _spiked(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[::100] += 8.0 * (np.std(np.diff(x)) + 1e-9)  # 1 % spikes, ~8 noise widths
    return x


def stream(name: str, n: int) -> tuple[np.ndarray, np.ndarray, list[float], list[float]]:
    """(training values, training times, values to score, their times): 5,000 warm-up readings
    then ``n`` counted, one reading a minute after the 2,000 training readings."""
    t_train = T0 + 60.0 * np.arange(2000)
    times = [T0 + 60.0 * (2000 + i) for i in range(5000 + n)]
    if name == "bench":
        from bench.part_scoring import training_values

        rng = np.random.default_rng(1)
        train = training_values(rng, 2000)
        s = training_values(rng, 10_000)
        s[::100] = 60.0
        vals = [float(s[i % s.shape[0]]) for i in range(5000 + n)]  # the bench repeats its stream
        return train, t_train, vals, times
    rng = np.random.default_rng(7 if name == "daily" else 8)
    m = 2000 + 5000 + n
    t = T0 + 60.0 * np.arange(m)
    if name == "daily":
        x = 20.0 + 3.0 * np.sin(2.0 * math.pi * t / 86400.0) + rng.normal(0.0, 0.3, m)
    elif name == "walk":
        x = 20.0 + np.cumsum(rng.normal(0.0, 0.05, m)) + rng.normal(0.0, 0.1, m)
    else:
        raise ValueError(name)
    x = np.concatenate([x[:2000], _spiked(x[2000:])])
    return x[:2000], t_train, [float(v) for v in x[2000:]], times


def count(name: str, n: int, by_function: bool) -> dict[str, Any]:
    from bench.part_scoring import ROBUST_PARTS  # the labels _robust_p99 gives robust's slow cycle
    from edge_agent import detectors

    train, t_train, vals, times = stream(name, n)
    det = detectors.create("robust", {})
    det.fit(train, t_train)
    score = det.score_one
    for i in range(5000):
        score(vals[i], times[i])
    ops = 0
    funcs: Counter[str] = Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return local

    def local(frame: Any, event: str, arg: Any) -> Any:
        nonlocal ops
        if event == "opcode":
            ops += 1
        return local

    def local_by(frame: Any, event: str, arg: Any) -> Any:
        nonlocal ops
        if event == "opcode":
            ops += 1
            funcs[frame.f_code.co_name] += 1
        return local_by

    if by_function:
        def tracer(frame: Any, event: str, arg: Any) -> Any:  # noqa: F811
            frame.f_trace_opcodes = True
            return local_by

    out = np.empty(n, dtype=np.int64)
    labels: list[str] = []
    for i in range(n):
        j = 5000 + i
        phase = det.s_phase
        ops = 0
        sys.settrace(tracer)
        score(vals[j], times[j])
        sys.settrace(None)
        out[i] = ops
        label = ROBUST_PARTS[det.s_phase] if det.s_phase != phase else "no part"
        labels.append(label + " + profile" if det.p_tick == 0 else label)
    lab = np.array(labels)
    res: dict[str, Any] = {"n": n, "mean": float(out.mean())}
    for p in (50, 95, 99):
        res[f"p{p}"] = float(np.percentile(out, p))
    res["max"] = int(out.max())
    slowest = out >= np.percentile(out, 99)
    res["labels"] = {k: {"share": float((lab == k).mean()), "median": float(np.median(out[lab == k])),
                         "p99": float(np.percentile(out[lab == k], 99)),
                         "of_slowest_1pct": float((slowest & (lab == k)).sum() / slowest.sum())} for k in sorted(set(labels))}
    res["state"] = {"seasonal": bool(det.seasonal), "f_alpha": det.f_alpha, "short_on": bool(det._ksh[1]),
                    "slope_on": bool(det._ksl[1]), "back_on": bool(det._i_bk), "day_g": det.day_g, "prof_k": det._prof_k}
    if by_function:
        res["by_function"] = {k: v / n for k, v in funcs.most_common()}
    return res


def _print(results: dict[str, dict[str, Any]]) -> None:
    trees = list(results)
    for s in results[trees[0]]:
        print(f"== {s}  {results[trees[0]][s]['state']}")
        print("  " + "tree".ljust(28) + "".join(k.rjust(9) for k in ("mean", "p50", "p95", "p99", "max")))
        for t in trees:
            r = results[t][s]
            print("  " + t[-28:].ljust(28) + "".join(f"{r[k]:9.0f}" for k in ("mean", "p50", "p95", "p99", "max")))
        for lab in results[trees[0]][s]["labels"]:
            row = []
            for t in trees:
                x = results[t][s]["labels"].get(lab)
                row.append(f"{x['median']:6.0f}/{x['p99']:6.0f} ({x['of_slowest_1pct']:4.0%})" if x else "-")
            share = results[trees[0]][s]["labels"][lab]["share"]
            print(f"    {lab:<22} {share:5.3f}  median/p99 (of the slowest 1 %) " + "  ".join(row))
        if "by_function" in results[trees[0]][s]:
            for t in trees:
                bf = results[t][s]["by_function"]
                print(f"  by function, {t[-28:]}: " + ", ".join(f"{k} {v:.0f}" for k, v in bf.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="counted readings per stream")
    ap.add_argument("--streams", default=",".join(STREAMS))
    ap.add_argument("--base", help="another checkout to count side by side")
    ap.add_argument("--by-function", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)  # (one tree's JSON, for --base)
    a = ap.parse_args()
    names = [s for s in a.streams.split(",") if s]
    if a.raw:
        print(json.dumps({s: count(s, a.n, a.by_function) for s in names}))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = ([a.base] if a.base else []) + [here]
    results: dict[str, dict[str, Any]] = {}
    for tree in trees:
        # (run by path, not -m: the tree on PYTHONPATH, not the current directory, is imported)
        args = [sys.executable, os.path.abspath(__file__), "--raw", "--n", str(a.n), "--streams", ",".join(names)]
        if a.by_function:
            args.append("--by-function")
        env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "PYTHONHASHSEED": "0"}
        res = subprocess.run(args, cwd=here, env=env, capture_output=True, text=True, check=True)
        results[os.path.abspath(tree)] = json.loads(res.stdout)
    _print(results)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
