"""``/plot/{series}.png`` from a real agent: decodes, has the asked size, shows band and alarm."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_http_live import HttpAgent, running

from edge_agent.http.plots import BAND_COLOR, RAISED_COLOR


def rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])


def pixels_near(img: np.ndarray, colour: str, tol: int = 6) -> int:
    return int((np.abs(img[:, :, :3].astype(int) - rgb(colour)).max(axis=2) <= tol).sum())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpAgent]:
    # ~10 sigma: an alarm, and the band stays visible
    with running(tmp_path_factory, ["P1/temp", "P2/temp"], alarm=("P1/temp", 30.0)) as (agent, _):
        yield agent

def get_png(agent: HttpAgent, path: str, tmp_path: Path) -> np.ndarray:
    r = agent.get(path)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == "image/png"
    (tmp_path / "plot.png").write_bytes(r.content)
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))


def test_plot_shows_band_and_alarm_marker(live: HttpAgent, tmp_path: Path) -> None:
    img = get_png(live, "/plot/P1/temp.png?width=640&height=320&n=100", tmp_path)
    assert img.shape[:2] == (320, 640)
    assert pixels_near(img, BAND_COLOR) > 640 * 3, "no threshold band"  # a horizontal strip, wide
    # At the newest reading, on the right; the legend (upper left) has a red triangle of its own.
    assert pixels_near(img[:, int(640 * 0.8):], RAISED_COLOR) > 30, "no alarm marker at the alarm reading"


def test_plot_without_alarm_has_no_alarm_marker(live: HttpAgent, tmp_path: Path) -> None:
    img = get_png(live, "/plot/P2%2Ftemp.png?width=500&height=250", tmp_path)
    assert img.shape[:2] == (250, 500)
    assert pixels_near(img, BAND_COLOR) > 500 * 3
    assert pixels_near(img, RAISED_COLOR) == 0


def test_unchanged_series_is_served_from_the_cache(live: HttpAgent) -> None:
    a = live.get("/plot/P2/temp.png?width=400&height=200")
    b = live.get("/plot/P2/temp.png?width=400&height=200")
    assert a.status_code == b.status_code == 200 and a.content == b.content


def test_plot_errors(live: HttpAgent) -> None:
    for path, status in [
        ("/plot/no/such.png", 404),
        ("/plot/P1/temp.png?n=5", 422),
        ("/plot/P1/temp.png?width=100000", 422),
        ("/plot/P1/temp.png?height=1", 422),
    ]:
        r = live.get(path)
        assert r.status_code == status and r.json()["error"], (path, r.text)
