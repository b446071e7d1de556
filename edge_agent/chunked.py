"""Work over every series, a slice per event-loop pass.

A sort or a scan of 100,000 series is tens of milliseconds in one go, and ``sorted`` or a
comprehension holds the GIL throughout, so a thread does not help either: every reading and
alarm would wait. These do the same work in slices of ``CHUNK`` with a yield to the loop
between them (well under a millisecond each). Used by the HTTP listings
(``http/series_index.py``) and the ``status``/``fit`` commands' series selection.

Work whose cost per item is larger and varies with the CPU (an HTML row with its sparkline)
is sliced by time instead (``mapped``): a gateway slower than the machine a count was measured
on would otherwise hold the loop for longer per pass. Five browsers listing 10,000 rows of the
status page a slice of 100 rows per pass held the loop 25 ms or more at 79 % of the loop's
probes on a slow machine (tests/test_hostile_http.py's listing test, failing there on
d89d7c0 too); a slice of at most ``SLICE_S`` of work bounds it on any CPU.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable
from itertools import islice
from time import perf_counter
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
CHUNK = 2000  # items per loop pass for a sort or a cheap scan (measured ~0.3-0.5 ms)
SLICE_S = 0.002  # loop time one slice of ``mapped`` work may take before it yields


async def merged(runs: list[list[T]], chunk: int = CHUNK) -> list[T]:
    """Merge sorted lists, ``chunk`` items per loop pass."""
    out: list[T] = []
    it = heapq.merge(*runs)  # type: ignore[type-var]
    while True:
        part = list(islice(it, chunk))
        if not part:
            return out
        out += part
        await asyncio.sleep(0)


async def sorted_chunked(items: list[T], chunk: int = CHUNK) -> list[T]:
    """``sorted(items)``, sorted a slice at a time and merged lazily."""
    if len(items) <= chunk:
        return sorted(items)  # type: ignore[type-var]
    runs = []
    for i in range(0, len(items), chunk):
        runs.append(sorted(items[i:i + chunk]))  # type: ignore[type-var]
        await asyncio.sleep(0)
    return await merged(runs, chunk)


async def filtered(items: list[T], keep: Callable[[T], bool], chunk: int = CHUNK // 2) -> list[T]:
    """``[x for x in items if keep(x)]``, ``chunk`` items per loop pass."""
    out: list[T] = []
    for i in range(0, len(items), chunk):
        out += [x for x in items[i:i + chunk] if keep(x)]
        await asyncio.sleep(0)
    return out


async def mapped(items: Iterable[T], fn: Callable[[T], R | None], slice_s: float = SLICE_S) -> list[R]:
    """``[fn(x) for x in items]`` less the ``None`` results, yielding to the loop whenever
    ``slice_s`` of work has been done since the last yield."""
    out: list[R] = []
    deadline = perf_counter() + slice_s
    for x in items:
        r = fn(x)
        if r is not None:
            out.append(r)
        if perf_counter() > deadline:
            await asyncio.sleep(0)
            deadline = perf_counter() + slice_s
    return out
