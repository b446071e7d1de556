"""The band a detector used at each reading, for plots: checkpoints on the loop, replay off it.

A streaming detector (robust, adaptive) moves its expected range with every reading, so the
plot cannot draw today's band under last hour's readings (issue 16: alarm markers fell inside
the band drawn). Recording the range per reading costs the hot path: measured, +600-800 ns on
a ~2 us robust reading (+35 %), and 8 bytes per held reading. Instead:

- **on the loop**, a copy of the detector is kept from time to time (a *checkpoint*: the
  state before it scored reading ``index``): when a model is installed, restored or accepts a
  new normal, and every ``interval`` readings (half the ring) from the pipeline's every-8th-
  reading branch, so the common reading pays nothing. A robust copy is ~2.6 kB and ~40 us;
  a series keeps those it can still replay from (at most ~3), counted in its memory budget;
- **off the loop**, the plot worker replays the held readings from the oldest usable
  checkpoint through that copy, asking before each reading for the detector's ``band()``.
  Each reading's band is the one the detector held when it scored it, up to the timestamps,
  which the ring keeps exactly only once per 16 readings (robust reads them for its daily
  profile, in 15-minute bins). A reading outside it scores above the threshold on the
  spike channel; robust's other channels (level, drift, variance, stuck) can alarm inside it.

Non-streaming detectors (statistical, isolation forest) keep one range per model version: a
checkpoint holds that range and no copy. Readings older than the oldest checkpoint the ring
can replay from (at least half the ring, usually more) are drawn without a band.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edge_agent.series import Series

log = logging.getLogger(__name__)

MAX_KEPT = 4
# Bytes a copy holds, measured with tracemalloc over 100 copies of a fitted detector; the
# budget counts these (a detector not listed counts as the largest).
COPY_BYTES = {"robust": 2630, "adaptive": 575, "statistical": 373}
STATIC_BYTES = 120


@dataclass(frozen=True, slots=True)
class Checkpoint:
    index: int  # the series' reading number (0-based) this state had not scored yet
    version: int  # the model version
    detector: Any  # a private copy (streaming detectors), never scored on the loop; else None
    band: tuple[float, float] | None  # non-streaming: the range of the whole version
    nbytes: int


def static_band(det: Any) -> tuple[float, float] | None:
    band = det.band()
    if band is None and hasattr(det, "explain"):
        try:
            e = det.explain(float("nan"))
            band = (e.expected_low, e.expected_high)
        except Exception:
            band = None
    if band is None or not all(np.isfinite(band)):
        return None
    return (float(band[0]), float(band[1]))


def take(s: Series, det: Any, version: int, index: int) -> None:
    """Keep the state of ``det`` before it scores reading ``index`` of ``s`` (loop thread)."""
    if getattr(det, "streaming", False):
        cp = Checkpoint(index, version, copy.deepcopy(det), None, COPY_BYTES.get(det.name, max(COPY_BYTES.values())))
    else:
        cp = Checkpoint(index, version, None, static_band(det), STATIC_BYTES)
    cps = s.checkpoints
    if cps is None:
        cps = s.checkpoints = []
    while cps and cps[-1].index >= index:  # superseded: the same readings, a newer state
        _drop(s, cps.pop())
    oldest_held = s.n_readings - s.count
    # Those the ring can no longer replay from go, except the newest of them when nothing
    # newer covers the oldest held reading (a static band still covers it).
    while len(cps) > 1 and cps[1].index <= oldest_held:
        _drop(s, cps.pop(0))
    while len(cps) >= MAX_KEPT:
        _drop(s, cps.pop(0))
    cps.append(cp)
    if s.budget is not None:
        s.budget.bytes += cp.nbytes


def due(s: Series, interval: int) -> bool:
    cps = s.checkpoints
    return not cps or s.n_readings - 1 - cps[-1].index >= interval


def _drop(s: Series, cp: Checkpoint) -> None:
    if s.budget is not None:
        s.budget.bytes -= cp.nbytes


def plan(s: Series, n: int) -> tuple[int, int, list[Checkpoint]]:
    """For a plot of the last ``n`` readings: (first reading to copy, first reading shown, the
    checkpoints to replay), on the loop. The copy starts at the checkpoint that covers the
    first shown reading, if the ring still holds its readings."""
    first_held = s.n_readings - s.count
    first_shown = max(first_held, s.n_readings - n)
    usable = [c for c in (s.checkpoints or ()) if c.detector is None or c.index >= first_held]
    start = first_shown
    for c in usable:
        if c.index <= first_shown and c.detector is not None:
            start = c.index
    return start, first_shown, [c for c in usable if c.detector is None or c.index >= start]


def replay(values: np.ndarray, times: np.ndarray, first: int, checkpoints: list[Checkpoint]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per reading of ``values`` (readings ``first``, ``first + 1``, ...), NaN where
    no checkpoint covers it. Runs in the plot worker: it scores every reading again."""
    n = values.shape[0]
    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    cps = sorted(checkpoints, key=lambda c: c.index)
    for k, cp in enumerate(cps):
        a = max(0, cp.index - first)
        b = n if k + 1 == len(cps) else max(0, min(n, cps[k + 1].index - first))
        if a >= b:
            continue
        if cp.detector is None:
            if cp.band is not None:
                lo[a:b], hi[a:b] = cp.band
            continue
        det = copy.deepcopy(cp.detector)  # the worker's own: a checkpoint may be replayed twice
        band_of = det.band
        try:
            for i in range(a, b):
                # The band the reading is judged against is the one held *before* it is scored.
                # (Not explain()'s range: robust computes that only for readings that need an
                # explanation; after a normal reading it is the last alarm's, measured stale.)
                band = band_of()
                if band is not None:
                    lo[i], hi[i] = band
                det.score_one(float(values[i]), float(times[i]))
        except Exception:  # a plot without its band rather than no plot
            log.exception("replaying %s for a plot failed", getattr(det, "name", "?"))
    return lo, hi
