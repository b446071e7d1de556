"""Drawing a plot to PNG: numpy and matplotlib only.

It runs in a separate worker process (see ``plots.py``): matplotlib holds the GIL for most of
a render (~100 ms), which in a thread of the agent would stall the event loop and with it
every reading and alarm. This module imports nothing of the agent, so the worker is light.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def init_worker(state_dir: str, parent_pid: int | None = None) -> None:
    """Process-pool initializer: die with the agent, lower CPU priority (plots yield to
    scoring), import matplotlib once, with a writable config dir."""
    if parent_pid is not None:
        from edge_agent.workers import die_with_parent

        die_with_parent(parent_pid)
    try:
        os.nice(10)
    except OSError:
        pass
    _prepare_matplotlib(state_dir)
