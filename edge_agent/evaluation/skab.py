"""SKAB (Skoltech Anomaly Benchmark): reading its files and scoring by its published protocol.

SKAB is a real pump test bench: eight sensors sampled once a second, one fault episode per
file (``../shared/data/skab/README.md``). The protocol, as published with the benchmark:

* per file, the first ``FIT_ROWS`` (400) rows are for fitting; the rest are scored; no label
  may be used for fitting or thresholds;
* **outlier detection**: a binary prediction per scored row against the ``anomaly`` label,
  pooled over all files: F1 = TP / (TP + (FP + FN) / 2), FAR = FP / (FP + TN) (share of
  normal rows flagged), MAR = FN / (FN + TP) (share of anomalous rows missed);
* **changepoint detection**: predicted change points scored with SKAB's variant of the NAB
  scoring function, a window of ``window_s`` (60 s) starting at each labelled change point.

``changepoint_nab`` is written from SKAB's own scorer (``utils/evaluating.py``,
``evaluating_change_point(..., metric='nab')``), quirks included, so that our figures sit
beside the published ones: a window's slice includes both of its end points; the first
detection in the window *or in the quarter-window after it* scores
``(A_tp - A_fp) / (1 + exp(5 y / slow))  + A_fp`` with ``y`` its position relative to the
window's end and ``slow = len(window) // 4``; false positives are the detections before the
first window (that slice includes the first window's first row), and, for a window that was
detected, those in the last ``len(window) + slow`` rows before the next window (or the end of
the file). The corpus score is ``100 * (raw - null) / (perfect - null)`` with
``null = A_fn`` and ``perfect = A_tp`` per window.

Two consequences worth knowing when reading a score: a detection on the very row of a file's
first change point is charged once as a false positive as well; and with one detection per
fault episode (an alarm raised once and held) at most one of an episode's change points
(its start; its end is a second change point) can be hit, which caps the score well below 100.

Written by hand rather than imported: SKAB's scorer needs pandas (which the agent does not
ship) and prints as it goes.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

FIT_ROWS = 400
WINDOW_S = 60.0

# (A_tp, A_fp, A_fn) per profile, SKAB's table_of_coef.
PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, -0.11, -1.0),
    "low_fp": (1.0, -0.22, -1.0),
    "low_fn": (1.0, -0.11, -2.0),
}

# Published results on all SKAB experiments (outlier F1 / FAR % / MAR %; changepoint NAB
# standard), from the benchmark's README, for printing beside ours.
PUBLISHED_OUTLIER: dict[str, tuple[float, float, float]] = {
    "Conv-AE": (0.78, 13.55, 28.02),
    "MSET": (0.78, 39.73, 14.13),
    "PCA T2+Q": (0.76, 26.62, 24.92),
    "LSTM-AE": (0.74, 29.96, 25.92),
    "Isolation Forest": (0.29, 2.56, 82.89),
}
PUBLISHED_CHANGEPOINT_NAB: dict[str, float] = {
    "MSCRED": 32.42,
    "Isolation Forest": 26.16,
    "T2+Q": 25.35,
    "Conv-AE": 23.61,
}


@dataclass
class SkabFile:
    name: str  # relative to the data root, e.g. "valve1/3.csv"
    ts: np.ndarray  # epoch seconds, float64, one per row
    values: np.ndarray  # (rows, sensors) float64
    sensors: list[str]
    anomaly: np.ndarray  # bool per row (all False when the file has no labels)
    changepoint: np.ndarray  # bool per row


def _epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def read_file(root: str | os.PathLike[str], name: str) -> SkabFile:
    """One semicolon-separated SKAB file; label columns are optional (``anomaly-free.csv``)."""
    path = Path(root) / name
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    if not rows or rows[0][0] != "datetime":
        raise ValueError(f"{path}: not a SKAB file (first column must be 'datetime')")
    header = rows[0]
    labels = [c for c in ("anomaly", "changepoint") if c in header]
    sensors = [c for c in header[1:] if c not in labels]
    n_sensors = len(sensors)
    body = [r for r in rows[1:] if r]
    ts = np.array([_epoch(r[0]) for r in body], dtype=np.float64)
    values = np.array([[float(x) for x in r[1 : 1 + n_sensors]] for r in body], dtype=np.float64)

    def label(column: str) -> np.ndarray:
        if column not in header:
            return np.zeros(len(body), dtype=bool)
        i = header.index(column)
        return np.array([float(r[i]) == 1.0 for r in body], dtype=bool)

    return SkabFile(name, ts, values.reshape(len(body), n_sensors), sensors, label("anomaly"), label("changepoint"))


def list_files(root: str | os.PathLike[str], group: str = "valve1") -> list[str]:
    """The labelled files of one group, in numeric order (``valve1/0.csv``, ``valve1/1.csv``, ...)."""
    folder = Path(root) / group
    names = [p.name for p in folder.glob("*.csv")]
    return [f"{group}/{n}" for n in sorted(names, key=lambda n: (len(n), n))]


ANOMALY_FREE = "anomaly-free/anomaly-free.csv"


# ---- outlier metrics -------------------------------------------------------------------------
@dataclass
class OutlierScore:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def f1(self) -> float:
        d = self.tp + (self.fp + self.fn) / 2
        return self.tp / d if d else 0.0

    @property
    def far(self) -> float:
        """False alarm rate, % of normal rows flagged."""
        return 100.0 * self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def mar(self) -> float:
        """Missed alarm rate, % of anomalous rows not flagged."""
        return 100.0 * self.fn / (self.fn + self.tp) if self.fn + self.tp else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"f1": self.f1, "far_pct": self.far, "mar_pct": self.mar, "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}


def outlier_score(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> OutlierScore:
    """Pool (true, predicted) boolean row arrays over files, as SKAB does."""
    tp = fp = fn = tn = 0
    for true, pred in pairs:
        t = np.asarray(true, dtype=bool)
        p = np.asarray(pred, dtype=bool)
        if t.shape != p.shape:
            raise ValueError(f"label and prediction lengths differ: {t.shape} vs {p.shape}")
        tp += int((t & p).sum())
        fp += int((~t & p).sum())
        fn += int((t & ~p).sum())
        tn += int((~t & ~p).sum())
    return OutlierScore(tp, fp, fn, tn)


# ---- changepoint NAB (SKAB's variant) ---------------------------------------------------------
def _sigm_scale(y: float, a_tp: float, a_fp: float, window: float) -> float:
    if window <= 0:
        # A window shorter than 4 rows has no slow part; SKAB would divide by zero. Score the
        # detection as at the window's end or after: early is best, late is a false positive.
        return a_tp if y < 0 else a_fp
    z = 5.0 * y / window
    if z > 700:  # exp overflow: the limit is a_fp
        return a_fp
    return (a_tp - a_fp) / (1.0 + math.exp(z)) + a_fp


def file_changepoint_raw(ts: np.ndarray, true_cp: np.ndarray, pred_cp: np.ndarray, profile: str, window_s: float = WINDOW_S) -> tuple[float, int]:
    """(raw score, windows) of one file's predicted change points (booleans per row)."""
    a_tp, a_fp, a_fn = PROFILES[profile]
    ts = np.asarray(ts, dtype=np.float64)
    pred = np.asarray(pred_cp, dtype=bool)
    cps = ts[np.asarray(true_cp, dtype=bool)]
    # Label slices [start, end] are inclusive: searchsorted left for a start, right for an end.
    bounds = [(int(np.searchsorted(ts, t, "left")), int(np.searchsorted(ts, t + window_s, "right"))) for t in cps]
    if not bounds:
        return float(pred.sum()) * a_fp, 0
    score = float(pred[: bounds[0][0] + 1].sum()) * a_fp
    for i, (lo, hi) in enumerate(bounds):
        space_hi = bounds[i + 1][0] + 1 if i + 1 < len(bounds) else len(pred)
        space = pred[lo:space_hi]
        fault = pred[lo:hi]
        slow = len(fault) // 4
        fault_slow = fault if len(fault) + slow >= len(space) else space[: len(fault) + slow]
        fp_part = space[-len(fault_slow):] if len(fault_slow) else space[:0]
        hits = np.flatnonzero(fault_slow)
        if hits.size == 0:
            score += a_fn
        else:
            # SKAB charges the false-positive part only of a window that was detected.
            score += _sigm_scale(float(hits[0] - len(fault)), a_tp, a_fp, slow)
            score += float(fp_part.sum()) * a_fp
    return score, len(bounds)


def changepoint_nab(files: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], window_s: float = WINDOW_S) -> dict[str, float]:
    """Corpus score per profile for ``[(ts, true changepoints, predicted changepoints), ...]``."""
    out: dict[str, float] = {}
    for profile, (a_tp, _a_fp, a_fn) in PROFILES.items():
        raw = 0.0
        windows = 0
        for ts, true_cp, pred_cp in files:
            r, w = file_changepoint_raw(ts, true_cp, pred_cp, profile, window_s)
            raw += r
            windows += w
        null, perfect = a_fn * windows, a_tp * windows
        out[profile] = 100.0 * (raw - null) / (perfect - null) if perfect > null else 0.0
    return out


def scored_part(f: SkabFile, fit_rows: int = FIT_ROWS) -> slice:
    """The rows the protocol scores: everything after the fit rows."""
    return slice(fit_rows, len(f.ts))
