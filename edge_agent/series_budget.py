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

import heapq
from collections.abc import Iterable

from edge_agent.series import Series

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
