"""``/plot/{series}.png``: recent readings, the detector's normal band, and raised alarms.

The data is copied on the loop thread (a few numpy slices); the drawing (``render.py``) runs
in a small pool of worker *processes*, at most ``http.plot_concurrency`` at a time: rendering
in a thread measured 144 ms p99 reading-to-alarm latency under continuous plot requests,
because matplotlib holds the GIL while it draws. Finished PNGs are kept in a small LRU keyed by
what the picture shows: series id, ``Series.changes``, model version and the request's size and
window, so refreshing a quiet series costs nothing.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from edge_agent.agent import Agent
from edge_agent.http.errors import ApiError, responses
from edge_agent.http.render import (
    BAND_COLOR,
    CACHE_ENTRIES,
    RAISED_COLOR,
    PlotData,
    init_worker,
    render_png,
)
from edge_agent.series import Series

__all__ = ["BAND_COLOR", "RAISED_COLOR", "PlotRenderer", "router", "snapshot"]

def snapshot(s: Series, n: int, width: int, height: int) -> PlotData:
    """Copy what the plot needs (loop thread): the ring buffer and the model change under us."""
    times, values = s.recent(n)
    model = s.model
    band = None
    if model is not None:
        b = model.detector.band()
        if b is not None and all(np.isfinite(b)):
            band = (float(b[0]), float(b[1]))
    t0 = float(times[0]) if times.shape[0] else float("inf")
    marks = tuple((m.ts, m.value, m.state) for m in s.marks if m.ts >= t0)
    return PlotData(
        s.id, s.state, times, values, band, marks,
        model.detector.name if model is not None else None,
        model.version if model is not None else None,
        width, height,
    )


class PlotRenderer:
    def __init__(self, state_dir: str, concurrency: int, entries: int = CACHE_ENTRIES) -> None:
        self.state_dir = state_dir
        self.semaphore = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.executor: ProcessPoolExecutor | None = None  # started on the first plot request
        self.cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self.entries = entries
        self.hits = 0
        self.renders = 0

    def _pool(self) -> ProcessPoolExecutor:
        if self.executor is None:
            # spawn, not fork: the agent has threads (outbox writer, fits), and a forked child
            # could inherit a lock held by one of them.
            self.executor = ProcessPoolExecutor(
                max_workers=self.concurrency,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker,
                initargs=(self.state_dir, os.getpid()),
                max_tasks_per_child=500,  # bounds whatever matplotlib accumulates
            )
        return self.executor

    async def png(self, s: Series, n: int, width: int, height: int) -> bytes:
        key = (s.id, s.changes, s.model.version if s.model is not None else None, n, width, height)
        hit = self.cache.get(key)
        if hit is not None:
            self.cache.move_to_end(key)
            self.hits += 1
            return hit
        data = snapshot(s, n, width, height)
        async with self.semaphore:
            try:
                png = await asyncio.get_running_loop().run_in_executor(self._pool(), render_png, data)
            except BrokenProcessPool:
                self.executor = None  # a worker died (OOM killer?): start afresh next time
                raise
        self.renders += 1
        self.cache[key] = png
        self.cache.move_to_end(key)
        while len(self.cache) > self.entries:
            self.cache.popitem(last=False)
        return png

    async def offload(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in this pool's worker processes (large ``POST /predict`` bodies),
        under the same concurrency bound as plots."""
        async with self.semaphore:
            try:
                return await asyncio.get_running_loop().run_in_executor(self._pool(), fn, *args)
            except BrokenProcessPool:
                self.executor = None
                raise

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


router = APIRouter(tags=["plots"])


@router.get(
    "/plot/{series_id:path}.png",
    summary="PNG plot of a series: recent readings, normal band, alarms",
    response_class=Response,
    responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}, "description": "The plot"}, **responses(404, 422)},
)
async def plot(
    request: Request,
    series_id: str,
    n: int = Query(500, ge=10, le=1_000_000, description="Readings to show (at most the series buffer size)"),
    width: int = Query(900, ge=200, le=2400, description="Width in pixels"),
    height: int = Query(360, ge=150, le=1600, description="Height in pixels"),
) -> Response:
    agent: Agent = request.app.state.agent
    s = agent.pipeline.series.get(series_id) if agent.pipeline is not None else None
    if s is None:
        raise ApiError(404, "unknown_series", f"no series {series_id!r}")
    renderer: PlotRenderer = request.app.state.plots
    png = await renderer.png(s, min(n, agent.cfg.series.buffer_size), width, height)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})
