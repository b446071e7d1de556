"""Optional profiling of the live agent with py-spy (``BENCH_PROFILE=DIR make bench``).

``record(pid, seconds, out)`` runs ``py-spy record --format raw`` (collapsed stacks) beside a
measured run; ``top(path)`` summarises the collapsed file into own-time and inclusive shares
per function, the figures quoted in the report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.common import track


def enabled() -> Path | None:
    d = os.environ.get("BENCH_PROFILE")
    if not d:
        return None
    p = Path(d)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _pyspy() -> str | None:
    cand = Path(sys.executable).parent / "py-spy"
    return str(cand) if cand.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, idle: bool = False) -> subprocess.Popen | None:
    exe = _pyspy()
    if exe is None:
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200", "--format", "raw", "-o", str(out), "--threads", "--nonblocking"]
    if idle:
        cmd.append("--idle")
    return track(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def top(path: Path, n: int = 25, thread: str | None = None) -> dict[str, list[tuple[str, float]]]:
    """Own-time and inclusive shares (% of samples) per function from a collapsed-stack file."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not stack:
            continue
        if thread and thread not in stack.split(";", 1)[0]:
            continue
        c = int(cnt)
        total += c
        frames = stack.split(";")
        own[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    if not total:
        return {"own": [], "inclusive": []}
    return {
        "samples": total,  # type: ignore[dict-item]
        "own": [(f, 100.0 * c / total) for f, c in own.most_common(n)],
        "inclusive": [(f, 100.0 * c / total) for f, c in incl.most_common(n)],
    }
