"""The NAB (Numenta Anomaly Benchmark) scoring rules, as pure functions.

Written from the published rules (Lavin & Ahmad, "Evaluating Real-time Anomaly Detection
Algorithms - the Numenta Anomaly Benchmark", and NAB v1.1's sweeper):

* The first ``min(floor(0.15 * rows), 750)`` rows of a file are probationary: detections there
  are ignored (the detector is still learning).
* Inside a labelled window only the earliest detection counts, weighted by how early it is:
  ``tp * sig(pos) / sig(-1)`` with ``pos = -(right - i + 1) / width``.
* A window without a detection costs ``-fn``.
* A detection outside every window costs ``fp * sig(|prev_right - i| / (prev_width - 1))``
  relative to the preceding window (a late detection just after a window costs little), or
  ``-fp`` when no window precedes it.
* Corpus score ``100 * (raw - null) / (perfect - null)``, null = ``-fn`` and perfect = ``tp``
  per window, raw summed over all files.

>>> rows = 100                       # probation = 15 rows
>>> windows = [(40, 49)]             # row indices, inclusive
>>> round(score_file(rows, windows, [40], STANDARD).raw, 4)   # earliest possible detection
1.0
>>> round(score_file(rows, windows, [], STANDARD).raw, 4)     # missed window
-1.0
>>> round(score_file(rows, windows, [20], STANDARD).raw, 4)   # FP before the window, plus FN
-1.11
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750  # NAB: 0.15 * 5000


@dataclass(frozen=True)
class Profile:
    name: str
    tp: float
    fp: float
    fn: float


STANDARD = Profile("standard", tp=1.0, fp=0.11, fn=1.0)
REWARD_LOW_FP = Profile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0)
REWARD_LOW_FN = Profile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0)
PROFILES: tuple[Profile, ...] = (STANDARD, REWARD_LOW_FP, REWARD_LOW_FN)


@dataclass(frozen=True)
class FileScore:
    """One file under one profile: ``raw`` plus the counts behind it."""

    raw: float
    tp: int  # windows with a (counted) detection
    fn: int  # windows without one
    fp: int  # counted detections outside every window
    windows: int


def sigmoid(x: float) -> float:
    """NAB's scaled sigmoid: 1 far before a window's end, -1 far after (> 3 widths)."""
    if x > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


_MAX_TP = sigmoid(-1.0)


def probation_rows(rows: int) -> int:
    return min(math.floor(PROBATION_FRACTION * rows), PROBATION_MAX_ROWS)


def score_file(
    rows: int,
    windows: Sequence[tuple[int, int]],
    detections: Iterable[int],
    profile: Profile,
) -> FileScore:
    """Score detections (row indices) against windows (inclusive row-index pairs, sorted).

    Each row is scored as NAB's sweeper does: rows inside a window score as true positives
    by position, rows outside as false positives relative to the previous window.
    """
    probation = probation_rows(rows)
    wins = sorted((int(a), int(b)) for a, b in windows)
    # For each detection find the window containing it, or the last window ending before it.
    best_tp: dict[int, float] = {}
    fp_total = 0.0
    fp_count = 0
    for i in sorted(set(int(d) for d in detections)):
        if i < probation or i < 0 or i >= rows:
            continue
        inside = None
        prev = None
        for k, (left, right) in enumerate(wins):
            if left <= i <= right:
                inside = k
                break
            if right < i:
                prev = k
        if inside is not None:
            left, right = wins[inside]
            width = float(right - left + 1)
            score = sigmoid(-(right - i + 1) / width) * profile.tp / _MAX_TP
            # Only the earliest detection counts; earlier ones score higher, so keep the max.
            best_tp[inside] = max(best_tp.get(inside, -math.inf), score)
        else:
            if prev is None:
                unweighted = -1.0
            else:
                left, right = wins[prev]
                prev_width = float(right - left + 1)
                # A one-row window has width 1: NAB would divide by zero; treat as "far after".
                unweighted = sigmoid(abs(right - i) / (prev_width - 1)) if prev_width > 1 else -1.0
            fp_total += unweighted * profile.fp
            fp_count += 1
    missed = len(wins) - len(best_tp)
    raw = sum(best_tp.values()) + fp_total - profile.fn * missed
    return FileScore(raw=raw, tp=len(best_tp), fn=missed, fp=fp_count, windows=len(wins))


def normalized(raws: Iterable[float], window_counts: Iterable[int], profile: Profile) -> float:
    """The corpus score 0..100 (can go negative) from per-file raw scores and window counts."""
    raw = sum(raws)
    n = sum(window_counts)
    null = -profile.fn * n
    perfect = profile.tp * n
    if perfect == null:
        return 0.0
    return 100.0 * (raw - null) / (perfect - null)


def window_indices(timestamps: Sequence[float], windows: Iterable[tuple[float, float]]) -> list[tuple[int, int]]:
    """Map (start, end) times to inclusive row indices: first row >= start, last row <= end.

    ``timestamps`` must be sorted ascending; NAB windows fall on rows, so this is exact there.
    """
    import bisect

    out = []
    for start, end in windows:
        left = bisect.bisect_left(timestamps, start)
        right = bisect.bisect_right(timestamps, end) - 1
        if left <= right:
            out.append((left, right))
    return out


def score_corpus(
    files: dict[str, tuple[int, Sequence[tuple[int, int]], Iterable[int]]],
    profiles: Sequence[Profile] = PROFILES,
) -> dict[str, float]:
    """``{profile name: corpus score}`` for ``{file: (rows, windows, detection indices)}``."""
    out: dict[str, float] = {}
    materialised = {k: (rows, list(w), list(d)) for k, (rows, w, d) in files.items()}
    for p in profiles:
        scores = [score_file(rows, w, d, p) for rows, w, d in materialised.values()]
        out[p.name] = normalized((s.raw for s in scores), (s.windows for s in scores), p)
    return out


# --- NAB data files -------------------------------------------------------------------------


def parse_timestamp(text: str) -> float:
    """NAB's ``YYYY-mm-dd HH:MM:SS[.ffffff]`` (UTC, naive) as epoch seconds."""
    import datetime as dt

    return dt.datetime.fromisoformat(text.strip()).replace(tzinfo=dt.UTC).timestamp()


def read_csv(path: str | os.PathLike[str]) -> tuple[list[float], list[float]]:
    """``(timestamps, values)`` of a NAB ``timestamp,value`` CSV file."""
    import csv

    ts: list[float] = []
    values: list[float] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected a 'timestamp,value' header, got {header!r}")
        for row in reader:
            if not row:
                continue
            ts.append(parse_timestamp(row[0]))
            values.append(float(row[1]))
    return ts, values


def load_windows(path: str | os.PathLike[str]) -> dict[str, list[tuple[float, float]]]:
    """``{relative file name: [(start, end) epoch seconds, ...]}`` from NAB's ``windows.json``."""
    import json

    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    return {name: [(parse_timestamp(a), parse_timestamp(b)) for a, b in wins] for name, wins in raw.items()}
