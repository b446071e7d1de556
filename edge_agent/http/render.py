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
from typing import Any

import numpy as np

LINE_COLOR = "#1f77b4"
BAND_COLOR = "#c7e9c0"  # opaque, drawn under the data: tests look for exactly this colour
RAISED_COLOR = "#e41a1c"
CLEARED_COLOR = "#4d4d4d"
LIMIT_COLOR = "#8b0000"
_LIMIT_LABEL = {"hihi": "HiHi", "hi": "Hi", "lo": "Lo", "lolo": "LoLo"}
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
    unit: str | None = None
    limits: tuple[tuple[str, float], ...] = ()  # engineering limits: (hihi|hi|lo|lolo, setpoint)
    # Detector checkpoints (checkpoints.py) to replay ``values`` through; ``first`` is the
    # reading number of values[0]; the first ``lead`` readings are replayed, not shown.
    checkpoints: tuple[Any, ...] = ()
    first: int = 0
    lead: int = 0


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
    times, values = d.times, d.values
    lo_band = hi_band = None
    if d.checkpoints:
        # numpy only; the checkpoints' detector copies come unpickled with the data
        from edge_agent.checkpoints import replay

        lo_band, hi_band = replay(values, times, d.first, list(d.checkpoints))
        times, values, lo_band, hi_band = times[d.lead:], values[d.lead:], lo_band[d.lead:], hi_band[d.lead:]
    if values.shape[0] == 0:
        ax.text(0.5, 0.5, "no readings yet", ha="center", va="center", transform=ax.transAxes)
    else:
        x = (times * 1e3).astype("datetime64[ms]")
        lo, hi = float(np.min(values)), float(np.max(values))
        if lo_band is not None and hi_band is not None and np.isfinite(lo_band).any():
            ok = np.isfinite(lo_band) & np.isfinite(hi_band)
            ax.fill_between(x, np.where(ok, lo_band, np.nan), np.where(ok, hi_band, np.nan), step="mid", facecolor=BAND_COLOR,
                            edgecolor="none", zorder=0, label="expected range (as scored)")
            lo, hi = min(lo, float(np.min(lo_band[ok]))), max(hi, float(np.max(hi_band[ok])))
        elif d.band is not None:
            ax.axhspan(d.band[0], d.band[1], facecolor=BAND_COLOR, edgecolor="none", zorder=0, label="normal band")
            lo, hi = min(lo, d.band[0]), max(hi, d.band[1])
        ax.plot(x, values, color=LINE_COLOR, linewidth=1.0, zorder=2, label="readings")
        for name, setpoint in d.limits:
            high = name in ("hi", "hihi")
            ax.axhline(setpoint, color=LIMIT_COLOR, linewidth=1.2 if name in ("hihi", "lolo") else 0.9,
                       linestyle="-" if name in ("hihi", "lolo") else "--", zorder=1.5,
                       label=f"{_LIMIT_LABEL[name]} {setpoint:g}" + (f" {d.unit}" if d.unit else ""))
            lo, hi = (lo, max(hi, setpoint)) if high else (min(lo, setpoint), hi)
        raised = [(t, v) for t, v, state in d.marks if state == "raised"]
        cleared = [(t, v) for t, v, state in d.marks if state in ("cleared", "accepted")]
        if raised:
            rt = (np.array([t for t, _ in raised]) * 1e3).astype("datetime64[ms]")
            ax.scatter(rt, [v for _, v in raised], s=90, marker="v", color=RAISED_COLOR, zorder=4, label="alarm raised")
        if cleared:
            ct = (np.array([t for t, _ in cleared]) * 1e3).astype("datetime64[ms]")
            ax.scatter(ct, [v for _, v in cleared], s=40, marker="o", color=CLEARED_COLOR, zorder=3, label="alarm ended")
        pad = (hi - lo) * 0.08 or max(abs(hi), 1.0) * 0.05
        ax.set_ylim(lo - pad, hi + pad)
        # Outside the data, under the axes: a legend inside covered readings.
        fig.legend(loc="outside lower center", ncols=min(5, len(ax.get_legend_handles_labels()[0])), fontsize=8, frameon=False)
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel(f"value ({d.unit})" if d.unit else "value", fontsize=9, parse_math=False)
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
