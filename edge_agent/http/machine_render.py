"""Drawing a machine's plot to PNG (issue 14): its score over time against the threshold, with
alarm edges, and below it one small panel per sensor, sharing the time axis.

Runs in the plot worker processes (``plots.PlotRenderer.offload``), like ``render.py`` and for
the same reason: matplotlib holds the GIL for the whole render. Imports nothing of the agent.
The picture is bounded: at most ``MAX_SENSOR_PANELS`` sensor panels (the rest are named in a
note) and at most the machine's ``machines.buffer_rows`` rows.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from edge_agent.http.render import CLEARED_COLOR, DPI, LINE_COLOR, RAISED_COLOR

SCORE_COLOR = "#6a3d9a"
THRESHOLD_COLOR = "#e31a1c"
MAX_SENSOR_PANELS = 16


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def render_machine_png(d: dict[str, Any]) -> bytes:
    """``d``: ``machines.operations.machine_plot_data`` plus ``state``, ``model``, ``width``,
    ``height``. Returns PNG bytes of exactly ``width`` x ``height`` pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    sensors: list[str] = list(d["sensors"])
    shown = sensors[:MAX_SENSOR_PANELS]
    width, height = d["width"], d["height"]
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    # Fixed margins in pixels, not layout="constrained", and few ticks (tick objects were
    # most of the time): 2.8x faster for 5 sensors, 2.3x for 16 (commit message).
    fig.subplots_adjust(left=110 / width, right=1 - 12 / width, top=1 - 28 / height, bottom=40 / height, hspace=0.15)
    axes = fig.subplots(1 + len(shown), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [2.0] + [1.0] * len(shown)})[:, 0]
    ax = axes[0]
    # parse_math=False: machine and sensor names are hostile text, "$" must not reach mathtext.
    ax.set_title(f"{_short(d['machine'])} - {d.get('model') or 'no model yet (learning)'} - {d.get('state', '')}",
                 fontsize=10, parse_math=False)
    ts = np.asarray(d["ts"], dtype=np.float64)
    if ts.shape[0] == 0:
        ax.text(0.5, 0.5, "no complete rows yet", ha="center", va="center", transform=ax.transAxes)
    else:
        x = (ts * 1e3).astype("datetime64[ms]")
        scores = np.asarray(d["scores"], dtype=np.float64)  # None (learning) -> nan: a gap
        ax.plot(x, scores, color=SCORE_COLOR, linewidth=1.0, label="score")
        if d.get("threshold") is not None:
            ax.axhline(d["threshold"], color=THRESHOLD_COLOR, linestyle="--", linewidth=1.0, label=f"threshold {d['threshold']:.3g}")
        for states, color, marker, label in ((("raised",), RAISED_COLOR, "v", "alarm raised"),
                                             (("cleared", "accepted"), CLEARED_COLOR, "o", "alarm ended")):
            pts = [(mk["ts"], mk["score"]) for mk in d.get("marks", ()) if mk["state"] in states and mk["score"] is not None]
            if pts:
                ax.scatter((np.array([t for t, _ in pts]) * 1e3).astype("datetime64[ms]"), [s for _, s in pts],
                           s=60, marker=marker, color=color, zorder=4, label=label)
        ax.legend(loc="upper left", fontsize=7, frameon=False)
        for sub, name in zip(axes[1:], shown, strict=True):
            sub.yaxis.set_major_locator(MaxNLocator(3))  # ticks are most of the drawing time
            sub.plot(x, np.asarray(d["values"][name], dtype=np.float64), color=LINE_COLOR, linewidth=0.8)
            sub.set_ylabel(_short(name, 16), fontsize=7, rotation=0, ha="right", va="center", parse_math=False)
            sub.tick_params(labelsize=6)
            sub.grid(True, color="#e0e0e0", linewidth=0.5)
        locator = AutoDateLocator(maxticks=6)
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    if len(sensors) > len(shown):
        fig.text(0.01, 0.005, f"{len(sensors) - len(shown)} more sensors not drawn", fontsize=7)
    ax.set_ylabel("score", fontsize=8)
    ax.grid(True, color="#e0e0e0", linewidth=0.5)
    ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("time (UTC)", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
