"""Work over every series, a slice per event-loop pass.

A sort or a scan of 100,000 series is tens of milliseconds in one go, and ``sorted`` or a
comprehension holds the GIL throughout, so a thread does not help either: every reading and
alarm would wait. These do the same work in slices of ``CHUNK`` with a yield to the loop
between them (well under a millisecond each). Used by the HTTP listings
(``http/series_index.py``) and the ``status``/``fit`` commands' series selection.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
CHUNK = 2000  # items per loop pass for a sort or a cheap scan (measured ~0.3-0.5 ms)


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
