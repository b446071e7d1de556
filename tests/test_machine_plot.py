"""The machine plot's drawing (``http/machine_render.py``) on its own: the size asked, bounded
panels, hostile names, and a machine with no rows yet. The route is tested end to end in
``test_machine_commands.py``."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edge_agent.http.machine_render import MAX_SENSOR_PANELS, render_machine_png


def size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def data(sensors: list[str], n: int, **extra: object) -> dict:
    rng = np.random.default_rng(1)
    ts = (1.7e9 + np.arange(n)).tolist()
    scores = [None] * min(n, 20) + np.abs(rng.normal(size=max(0, n - 20))).tolist()
    return {"machine": "l1/p1", "sensors": sensors, "ts": ts, "values": {s: rng.normal(size=n).tolist() for s in sensors},
            "scores": scores, "threshold": 3.0, "marks": [{"ts": ts[-5], "score": 4.0, "state": "raised"}] if n else [],
            "state": "alarm", "model": "baseline_t2 v2", "width": 640, "height": 800, **extra}


@pytest.mark.parametrize("n_sensors", [1, 8, MAX_SENSOR_PANELS + 8])
def test_the_png_has_the_size_asked_for_any_number_of_sensors(n_sensors: int) -> None:
    png = render_machine_png(data([f"s{i}" for i in range(n_sensors)], 300))
    assert size(png) == (640, 800)


def test_hostile_names_and_no_rows_still_draw() -> None:
    hostile = ["$\\frac{a}{b}$", "x" * 300, "<b>flow</b>"]
    assert size(render_machine_png(data(hostile, 50, machine="$\\alpha$/" + "y" * 300))) == (640, 800)
    assert size(render_machine_png(data(["current", "flow"], 0, threshold=None, width=300, height=300))) == (300, 300)
