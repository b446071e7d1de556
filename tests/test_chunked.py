"""chunked.py: work over every series a slice per event-loop pass."""

from __future__ import annotations

import asyncio
import time

from edge_agent.chunked import mapped, sorted_chunked


async def _mapped_beside_a_ticker() -> tuple[list[int], int, int, int]:
    """mapped over 20 items of 1 ms each (a heavy row on a slow CPU) in slices of 2.5 ms, with
    a task beside it counting the loop passes it gets meanwhile; then 1,000 cheap items."""
    stop = asyncio.Event()
    passes = 0

    async def ticker() -> None:
        nonlocal passes
        while not stop.is_set():
            passes += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0)

    def slow(x: int) -> int | None:
        time.sleep(0.001)
        return None if x % 3 == 0 else x

    start = passes
    out = await mapped(range(20), slow, slice_s=0.0025)
    during = passes - start
    start = passes
    cheap = await mapped(range(1000), lambda x: x, slice_s=60.0)
    cheap_passes = passes - start
    stop.set()
    await t
    return out, during, len(cheap), cheap_passes


def test_mapped_keeps_order_drops_none_and_yields_by_time_not_by_count() -> None:
    out, during, n, cheap_passes = asyncio.run(asyncio.wait_for(_mapped_beside_a_ticker(), 10))
    assert out == [x for x in range(20) if x % 3]
    # ~20 ms of work in slices of ~2.5 ms: the loop got a pass ~7 times (a loaded machine that
    # stretches each 1 ms sleep past the slice gets one per item)
    assert 3 <= during <= 20, during
    assert n == 1000 and cheap_passes == 0  # cheap work within its slice holds on: no yield per item


def test_sorted_chunked_sorts_as_sorted() -> None:
    items = [(i * 7919) % 10007 for i in range(10007)]
    assert asyncio.run(sorted_chunked(items, chunk=500)) == sorted(items)
