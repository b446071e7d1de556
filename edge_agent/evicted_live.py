"""The live state of series evicted for the memory budget, until their readings come back.

A series evicted with its model (``series_budget.py``, class ``idle_model``) has its model on
disk, but only as it was at the end of its fit window. A streaming detector (``robust``,
``adaptive``) has moved on since: reloaded at its fit-end state, a trending series finds its
model of normal far behind the current level, raises a level alarm and holds it until the
7-day acceptance (issue 13, the restart measurement in ``series_live.py``: 10,000 of the next
10,000 readings of a trend anomalous). An eviction is a restart of one series, so it keeps the
same thing a restart keeps: the detector's ``get_state()`` with its model version and detector
name (``series_live.Entry``), taken on the loop at eviction (~9 us for a robust series; an
eviction is not on the per-reading path), and put back when the same model version is
reloaded (``series_live.revive``: the start-up restore's checks, a bad entry costs that state
only, logged).

**Kept in memory, counted in the budget** (``series.max_bytes``), rather than written to disk
at each eviction: an entry is ~5.8 kB for a robust series (3.1 kB of arrays, the rest its
params as Python objects, measured with tracemalloc over 1,000 entries), a sixth of the 34 kB
ring the eviction frees, so eviction still frees memory; writing a file per eviction would
cost a flash write per series evicted (a flood of new topics evicts in batches of 1 % of
``max_series``) and per-series files would need names derived from series ids. The entries
are added to the same byte total as the series (``SeriesBytes``), so they cannot take the
agent past its budget: when evicting series no longer frees enough, the oldest entries go
first (``drop_oldest``; such a series then comes back from its fit-end state, as before).
They are not lost at a restart either: the periodic and clean-stop live-state file
(``series_live.py``) writes them beside the held series' states, and the start-up read puts
the entries of series not held back here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from edge_agent import series_live
from edge_agent.series import SeriesBytes
from edge_agent.series_live import Entry

# Bytes an entry costs besides its arrays (the params dict, the tuple, the id, the dict slot):
# ~2.7 kB for a robust series, measured as above; rounded up.
ENTRY_OVERHEAD_BYTES = 2800


def entry_bytes(entry: Entry) -> int:
    return ENTRY_OVERHEAD_BYTES + len(entry[0]) + sum(a.nbytes for a in entry[4].values())


class EvictedLive:
    """Series id -> the live state it was evicted with, oldest first, counted in ``budget``."""

    def __init__(self, budget: SeriesBytes) -> None:
        self.budget = budget
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.nbytes = 0
        self.n_dropped = 0  # entries let go for the byte budget

    def __len__(self) -> int:
        return len(self.entries)

    def keep(self, s: Any) -> bool:
        """``s`` is being evicted: keep its detector's live state if it streams."""
        taken = series_live.take([s])
        if not taken:
            return False
        self.put(taken[0])
        return True

    def put(self, entry: Entry) -> None:
        self.pop(entry[0])
        self.entries[entry[0]] = entry
        n = entry_bytes(entry)
        self.nbytes += n
        self.budget.bytes += n

    def pop(self, sid: str) -> Entry | None:
        entry = self.entries.pop(sid, None)
        if entry is not None:
            n = entry_bytes(entry)
            self.nbytes -= n
            self.budget.bytes -= n
        return entry

    def drop_oldest(self, nbytes: int) -> int:
        """Let go of the oldest entries until ``nbytes`` are freed (or none is left)."""
        freed = 0
        while freed < nbytes and self.entries:
            sid = next(iter(self.entries))
            before = self.nbytes
            self.pop(sid)
            freed += before - self.nbytes
            self.n_dropped += 1
        return freed

    def all(self) -> list[Entry]:
        """Every entry, for the live-state file (entries are never changed once kept: no copy)."""
        return list(self.entries.values())
