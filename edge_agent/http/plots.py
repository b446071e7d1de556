"""``/plot/{series}.png``: recent readings, the detector's normal band, and raised alarms.

The data is copied on the loop thread (a few numpy slices); the drawing runs in a small thread
pool, at most ``http.plot_concurrency`` at a time, with matplotlib's object API (no pyplot
global state, so threads do not share figures). Finished PNGs are kept in a small LRU keyed by
what the picture shows: series id, ``Series.changes``, model version and the request's size and
window, so refreshing a quiet series costs nothing.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from edge_agent.agent import Agent
from edge_agent.http.errors import ApiError, responses
from edge_agent.series import Series

LINE_COLOR = "#1f77b4"
BAND_COLOR = "#c7e9c0"  # opaque, drawn under the data: tests look for exactly this colour
RAISED_COLOR = "#e41a1c"
CLEARED_COLOR = "#4d4d4d"
DPI = 100
CACHE_ENTRIES = 32

_mpl_lock = threading.Lock()
_mpl_ready = False


def _prepare_matplotlib(state_dir: str) -> None:
    """Import matplotlib on first use, with a writable config/cache dir (the service user often has no HOME)."""
    global _mpl_ready
    with _mpl_lock:
        if _mpl_ready:
            return
        if not os.environ.get("MPLCONFIGDIR"):
            path = Path(state_dir) / "mplconfig"
            try:
                path.mkdir(parents=True, exist_ok=True)
                os.environ["MPLCONFIGDIR"] = str(path)
            except OSError:
                pass  # matplotlib falls back to a temporary dir and says so
        import matplotlib

        matplotlib.use("Agg", force=False)
        _mpl_ready = True


@dataclass(frozen=True, slots=True)
class PlotData:
    series_id: str
    state: str
    times: np.ndarray  # epoch seconds
    values: np.ndarray
    band: tuple[float, float] | None
    marks: tuple[tuple[float, float, str], ...]
    detector: str | None
    version: int | None
    width: int
    height: int


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


def render_png(d: PlotData) -> bytes:
    """Draw one plot to PNG bytes (worker thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(d.width / DPI, d.height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sid = d.series_id if len(d.series_id) <= 80 else d.series_id[:77] + "..."
    model = f"{d.detector} v{d.version}" if d.version is not None else "no model yet (learning)"
    # parse_math=False: series ids are hostile text, "$" must not reach mathtext.
    ax.set_title(f"{sid} - {model} - {d.state}", fontsize=10, parse_math=False)
    if d.values.shape[0] == 0:
        ax.text(0.5, 0.5, "no readings yet", ha="center", va="center", transform=ax.transAxes)
    else:
        x = (d.times * 1e3).astype("datetime64[ms]")
        lo, hi = float(np.min(d.values)), float(np.max(d.values))
        if d.band is not None:
            ax.axhspan(d.band[0], d.band[1], facecolor=BAND_COLOR, edgecolor="none", zorder=0, label="normal band")
            lo, hi = min(lo, d.band[0]), max(hi, d.band[1])
        ax.plot(x, d.values, color=LINE_COLOR, linewidth=1.0, zorder=2, label="readings")
        raised = [(t, v) for t, v, state in d.marks if state == "raised"]
        cleared = [(t, v) for t, v, state in d.marks if state == "cleared"]
        if raised:
            rt = (np.array([t for t, _ in raised]) * 1e3).astype("datetime64[ms]")
            ax.scatter(rt, [v for _, v in raised], s=90, marker="v", color=RAISED_COLOR, zorder=4, label="alarm raised")
        if cleared:
            ct = (np.array([t for t, _ in cleared]) * 1e3).astype("datetime64[ms]")
            ax.scatter(ct, [v for _, v in cleared], s=40, marker="o", color=CLEARED_COLOR, zorder=3, label="alarm cleared")
        pad = (hi - lo) * 0.08 or max(abs(hi), 1.0) * 0.05
        ax.set_ylim(lo - pad, hi + pad)
        ax.legend(loc="upper left", fontsize=8)
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.grid(True, color="#e0e0e0", linewidth=0.5, zorder=1)
    ax.set_xlabel("time (UTC)", fontsize=8)
    ax.tick_params(labelsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


class PlotRenderer:
    def __init__(self, state_dir: str, concurrency: int, entries: int = CACHE_ENTRIES) -> None:
        self.state_dir = state_dir
        self.semaphore = asyncio.Semaphore(concurrency)
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="edge-plot")
        self.cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self.entries = entries
        self.hits = 0
        self.renders = 0

    def _work(self, data: PlotData) -> bytes:
        _prepare_matplotlib(self.state_dir)
        return render_png(data)

    async def png(self, s: Series, n: int, width: int, height: int) -> bytes:
        key = (s.id, s.changes, s.model.version if s.model is not None else None, n, width, height)
        hit = self.cache.get(key)
        if hit is not None:
            self.cache.move_to_end(key)
            self.hits += 1
            return hit
        data = snapshot(s, n, width, height)
        async with self.semaphore:
            png = await asyncio.get_running_loop().run_in_executor(self.executor, self._work, data)
        self.renders += 1
        self.cache[key] = png
        self.cache.move_to_end(key)
        while len(self.cache) > self.entries:
            self.cache.popitem(last=False)
        return png

    def close(self) -> None:
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
