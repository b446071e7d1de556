"""The series memory budget: which series make room when a new one needs it.

A gateway holds at most ``series.max_series`` series and about ``series.max_bytes`` of series
state (rings and bookkeeping, ``Series.nbytes``). Before this module a series was never let go:
100,000 one-reading series on junk topics took the agent past its unit's ``MemoryMax``, and
with a low ``max_series`` junk filled every slot and real sensors were refused for good.

When a new series does not fit, series are evicted in this order, oldest first in each class:

1. ``new``: no model and only one reading so far. A junk topic sends one reading and is never
   heard from again; a real sensor sends its second reading soon and leaves this class.
2. ``idle``: no model, and no reading for ``series.idle_s``.
3. ``idle_model``: a model, and no reading for ``series.idle_s``. Its model stays on disk (the
   pipeline reloads it off the loop when readings return, see ``Pipeline.get_or_create``); what
   is lost is the ring (plot history, retrain data) and a streaming detector's drift since its
   last saved version.

Never evicted: a series in alarm (its clear must still come), one whose fit or model reload is
under way, and, without a model store, one with a model (it exists nowhere else).

Eviction frees a little more than needed (1 % of ``max_series``, ``max_bytes`` down to 99 %),
so a flood of new topics pays one pass over the series per batch, not per topic. A pass that
finds nothing to evict is not repeated before the pipeline's clock moves on (1 s): a flood of
series that cannot be admitted is refused at the cost of a dict lookup.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from edge_agent.series import Series

if TYPE_CHECKING:
    from edge_agent.pipeline import Pipeline

log = logging.getLogger(__name__)

CLASSES = ("new", "idle", "idle_model")


def evictable_class(s: Series, clock: float, idle_s: float, models_on_disk: bool) -> int | None:
    """0, 1, 2 for the classes above; None for a series that must stay."""
    if s.active or s.fit_pending:
        return None
    if s.model is None and s.n_readings <= 1:
        return 0
    # Readings since the last sweep (Pipeline.tick) mean busy, whatever ``seen`` says.
    if s.n_readings != s.seen_n or clock - s.seen < idle_s:
        return None
    if s.model is None:
        return 1
    return 2 if models_on_disk else None


def pick(series: Iterable[Series], clock: float, idle_s: float, models_on_disk: bool, count: int, nbytes: int) -> list[tuple[int, Series]]:
    """Up to what frees ``count`` series and ``nbytes`` bytes, best candidates first, as
    (class, series). Fewer when not enough can go."""
    ranked: list[tuple[int, float, int, Series]] = []
    for k, s in enumerate(series):
        cls = evictable_class(s, clock, idle_s, models_on_disk)
        if cls is not None:
            ranked.append((cls, s.seen, k, s))  # k: creation order breaks ties, and no Series compare
    out: list[tuple[int, Series]] = []
    freed = 0
    # nsmallest is O(n log m) for the m taken; a full sort only when the need is large.
    for cls, _, _, s in heapq.nsmallest(max(count, 1) if not nbytes else len(ranked), ranked):
        if len(out) >= count and freed >= nbytes:
            break
        out.append((cls, s))
        freed += s.nbytes
    return out


# ---- what the agent runs and reports ----------------------------------------------------------
async def upkeep(pipe: Pipeline, log_interval_s: float, interval_s: float = 1.0) -> None:
    """Every second: the pipeline's clock and idle sweep, evictions when over budget (rings grow
    without a new series asking for room), and a rate-limited log line about evictions."""
    logged = sum(pipe.n_evicted.values())
    last_log = 0.0
    while True:
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        pipe.tick(now)
        if pipe.over_budget():
            pipe.make_room()
        total = sum(pipe.n_evicted.values())
        if total != logged and now - last_log >= log_interval_s:
            log.warning(
                "evicted %d series to stay within the series budget (%d so far: %s); holding %d series, %.1f of %.1f MB",
                total - logged, total, ", ".join(f"{k}={v}" for k, v in pipe.n_evicted.items()), len(pipe.series),
                pipe.series_bytes.bytes / 1e6, pipe.max_bytes / 1e6,
            )
            logged, last_log = total, now


def problems(pipe: Pipeline) -> list[str]:
    """Health problems: new series refused in the last 10 minutes, or over budget with nothing
    left to evict."""
    out = []
    if pipe.last_refused is not None and pipe.clock - pipe.last_refused < 600:
        out.append(
            f"series budget full: {pipe.n_series_refused} reading(s) of new series refused (too_many_series), the last "
            f"{pipe.clock - pipe.last_refused:.0f} s ago; raise series.max_series / series.max_bytes or find the topics"
        )
    if pipe.over_budget():
        out.append(f"series state over budget and nothing idle to evict: {len(pipe.series)} series, "
                   f"{pipe.series_bytes.bytes / 1e6:.1f} of {pipe.max_bytes / 1e6:.1f} MB")
    return out


def view(pipe: Pipeline) -> dict[str, Any]:
    """The budget, its use and what it did (``/healthcheck`` ``series_budget``)."""
    return {
        "max_series": pipe.max_series,
        "max_bytes": pipe.max_bytes,
        "series": len(pipe.series),
        "bytes": pipe.series_bytes.bytes,
        "evicted": dict(pipe.n_evicted),
        "refused_readings": pipe.n_series_refused,
        "models_on_disk_only": len(pipe.evicted_models),
        "models_reloaded": pipe.n_restored,
    }
