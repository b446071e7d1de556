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
   is lost is the ring (plot history, retrain data). A streaming detector's live state is kept
   (``evicted_live.py``, counted in ``max_bytes``) and put back with the model; when evicting
   series no longer frees enough bytes, the oldest of those states go.

Never evicted: a series in alarm (its clear must still come), one whose fit or model reload is
under way, and, without a model store, one with a model (it exists nowhere else).

Finding victims costs O(1) per series evicted, never a pass over all series on the reading
path (a pass over 100,000 series took 140 ms): series enter a queue of new ones when created
(creation order is least-recently-updated order for one-reading series), and the pipeline's
idle sweep (``Pipeline.tick``, a tenth of the series per second) collects the idle ones into a
heap for the next round. Every candidate is checked again when taken. Eviction frees a little
more than needed (1 % of ``max_series``, ``max_bytes`` down to 99 %), but only from series
without a model: of ``idle_model`` only what is needed goes (each is a real sensor, and keeping
a streaming one's live state costs ~15-25 us on the loop: a batch of 1,000 would stall it
~20 ms). When nothing can go, the new series is refused at the cost of a dict lookup.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
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


class Evictor:
    """The candidates for eviction, kept as series come and go (see the module docstring)."""

    def __init__(self, idle_s: float, models_on_disk: bool) -> None:
        self.idle_s = idle_s
        self.models_on_disk = models_on_disk
        # Ids of series created and not yet seen to graduate, oldest first. An OrderedDict: a
        # dict's first key after many deletions at the front is found by a walk over the holes
        # (a batch of 1,000 evictions took 15 ms that way).
        self.new: OrderedDict[str, None] = OrderedDict()
        self.idle: list[tuple[int, float, int, str]] = []  # heap of (class, seen, order, id)
        self._next_idle: list[tuple[int, float, int, str]] = []
        self._order = 0

    def created(self, s: Series) -> None:
        self.new[s.id] = None

    def swept(self, s: Series, clock: float) -> None:
        """The idle sweep visited ``s`` (after updating its ``seen``)."""
        cls = evictable_class(s, clock, self.idle_s, self.models_on_disk)
        if cls != 0:
            self.new.pop(s.id, None)  # it has left the one-reading class (or must stay)
        if cls is not None and cls > 0:
            self._order += 1
            self._next_idle.append((cls, s.seen, self._order, s.id))

    def sweep_done(self) -> None:
        """A whole sweep is over: its idle series are the candidates of the next round."""
        heapq.heapify(self._next_idle)
        self.idle, self._next_idle = self._next_idle, []

    def victims(self, series: dict[str, Series], clock: float, count: int, nbytes: int) -> Iterator[tuple[int, Series]]:
        """Series to evict, best first, while the caller needs more (it stops iterating)."""
        new = self.new
        while new:
            sid, _ = new.popitem(last=False)
            s = series.get(sid)
            if s is not None and evictable_class(s, clock, self.idle_s, self.models_on_disk) == 0:
                yield 0, s
        while self.idle:
            cls, _, _, sid = heapq.heappop(self.idle)
            s = series.get(sid)
            if s is not None and evictable_class(s, clock, self.idle_s, self.models_on_disk) == cls:
                yield cls, s

    def forget(self, sid: str) -> None:
        self.new.pop(sid, None)


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
        "live_states_kept": len(pipe.evicted_live),
        "live_states_dropped": pipe.evicted_live.n_dropped,
    }
