"""Every series, listed without stalling the event loop: for the status page, ``GET /series``
and the counts in ``/healthcheck`` and ``/metrics``.

With 100,000 series, ``GET /`` cost 92 ms of loop time (issue 15, finding 10): a pass over
every series for its state, then one ``sort`` of 100,000 keys, which holds the GIL for its
whole run (so a thread would not have helped). Here the pass is cut into chunks of
``CHUNK`` series with a yield to the loop between them; each state's ids are sorted a chunk
at a time and merged lazily, again a chunk at a time. The result is shared for ``MAX_AGE_S``
by every request that wants it (one computation at a time), so a dashboard refreshed by ten
browsers costs one pass a second at most. Listings may be up to ``MAX_AGE_S`` old; a series
gone since (evicted) is skipped when its row is drawn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edge_agent.chunked import CHUNK, merged, sorted_chunked

ROWS_PER_PASS = 100  # rows drawn (summary, HTML) per loop pass: ~5-10 us each
MAX_AGE_S = 1.0
STATES = ("alarm", "learning", "normal", "stale")  # Series.state values, in the status page's order


@dataclass
class Snapshot:
    taken: float
    by_state: dict[str, list[str]]  # by Series.state, each sorted by id
    all_ids: list[str]  # sorted by id
    counts: dict[str, int] = field(default_factory=dict)  # /healthcheck's: by model, alarm and stale

    def ids(self, states: Iterable[str] | None = None) -> list[str] | Iterable[str]:
        """Ids sorted by id (``states`` None), or state by state in the order given."""
        if states is None:
            return self.all_ids
        return (sid for st in states for sid in self.by_state.get(st, ()))


class SeriesIndex:
    def __init__(self, agent: Any, max_age_s: float = MAX_AGE_S) -> None:
        self.agent = agent
        self.max_age_s = max_age_s
        self.latest: Snapshot | None = None
        self._pending: asyncio.Task[Snapshot] | None = None

    async def snapshot(self, max_age_s: float | None = None) -> Snapshot:
        """A snapshot at most ``max_age_s`` (default: the index's) old; 0 takes a new one,
        or joins the one being taken."""
        latest = self.latest
        age = self.max_age_s if max_age_s is None else max_age_s
        if latest is not None and time.monotonic() - latest.taken < age:
            return latest
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._take())
        return await asyncio.shield(self._pending)

    async def _take(self) -> Snapshot:
        pipe = self.agent.pipeline
        series = pipe.series if pipe is not None else {}
        ids = list(series)  # one C-level copy; the dict may change while we yield below
        by_state: dict[str, list[str]] = {st: [] for st in STATES}
        counts = {"total": 0, "trained": 0, "learning": 0, "normal": 0, "alarm": 0, "stale": 0}
        for i in range(0, len(ids), CHUNK):
            for sid in ids[i:i + CHUNK]:
                s = series.get(sid)
                if s is None:
                    continue
                by_state.setdefault(s.state, []).append(sid)
                # As /healthcheck always counted: by model, then alarm; stale on top (a series
                # whose Sparkplug source died is also learning or normal by its model).
                counts["total"] += 1
                counts["stale"] += bool(getattr(s, "stale", False))
                if s.model is None:
                    counts["learning"] += 1
                else:
                    counts["trained"] += 1
                    counts["alarm" if s.active else "normal"] += 1
            await asyncio.sleep(0)
        for st in list(by_state):
            by_state[st] = await sorted_chunked(by_state[st])
        all_ids = await merged(list(by_state.values()))
        snap = Snapshot(time.monotonic(), by_state, all_ids, counts)
        self.latest = snap
        return snap


def index_of(app_state: Any, agent: Any) -> SeriesIndex:
    """The app's shared index (created on first use)."""
    index = getattr(app_state, "series_index", None)
    if index is None:
        index = app_state.series_index = SeriesIndex(agent)
    return index
