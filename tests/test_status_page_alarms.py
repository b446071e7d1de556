"""The operator's status page in headless Chromium: two active alarms of different priority,
listed first, each row with its value and unit, priority and duration; and the series page
with its plot (screenshots checked)."""

from __future__ import annotations

import html
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_http_live import HttpAgent, running
from test_plot import pixels_near
from test_status_page import CHROMIUM, chromium

from edge_agent.http.render import BAND_COLOR, LIMIT_COLOR, RAISED_COLOR

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed")

RULES = [{"match": {"machine": "m1"}, "priority": "critical", "unit": "degC", "description": "bearing temperature"},
         {"match": {"machine": "m2"}, "priority": "low", "unit": "mm/s", "limits": {"hi": 25.0}}]
SERIES = ["m1/temp", "m2/vib", "m3/temp"]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"  # kept for a person to look at


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpAgent]:
    with running(tmp_path_factory, SERIES, rules=RULES) as (agent, pub):
        # m2 (low) first, then m1 (critical): the page must order by priority, not by time.
        pub.reading("plant/line1/m2/vib", 27.0, time.time()).wait_for_publish(10)
        pub.reading("plant/line1/m1/temp", 30.0, time.time()).wait_for_publish(10)
        for sid in ("m1/temp", "m2/vib"):
            deadline = time.monotonic() + 10
            while (agent.series(sid) or {}).get("state") != "alarm":
                assert time.monotonic() < deadline, f"{sid} not in alarm"
                time.sleep(0.05)
        yield agent


def test_active_alarms_first_with_value_unit_priority_and_duration(live: HttpAgent, tmp_path: Path) -> None:
    time.sleep(2.0)  # a duration of a few seconds on the page
    dom = chromium(tmp_path, live.base + "/?refresh=0", "--dump-dom", "--virtual-time-budget=2000")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    rows = re.findall(r'<tr class="alarm-row ([\w ]+)" data-series="([^"]*)" data-condition="(\w+)" data-priority="(\d)">(.*?)</tr>',
                      page, re.S)
    got = [(html.unescape(sid), cond, int(prio)) for _, sid, cond, prio, _ in rows]
    # m2 has two alarms (its model's and its Hi limit's): three rows, critical first.
    assert got[0] == ("m1/temp", "model", 4)
    assert sorted(got[1:]) == [("m2/vib", "hi", 1), ("m2/vib", "model", 1)]
    cells = {(html.unescape(sid), cond): body for _, sid, cond, _, body in rows}
    m1 = cells[("m1/temp", "model")]
    assert "30&nbsp;degC" in m1 and ">critical<" in m1 and "unacknowledged" in m1
    assert re.search(r'class="since" data-since="[\d.]+">\d+ s<', m1), m1  # the script ticks it, in seconds
    assert "\u2191 up" in m1 and "above" in m1  # direction (&uarr;) and how far out
    hi = cells[("m2/vib", "hi")]
    assert "27&nbsp;mm/s" in hi and ">low<" in hi and "Hi limit" in hi and "+2&nbsp;mm/s above" in hi
    assert '<b id="n-active">3</b>' in page and 'id="filter"' in page and 'id="token"' in page
    # Every series row has a sparkline.
    assert page.count('<svg class="spark"') == len(SERIES)

    SCREENSHOTS.mkdir(exist_ok=True)
    shot = SCREENSHOTS / "status_page_alarms.png"
    res = chromium(tmp_path, live.base + "/?refresh=0", f"--screenshot={shot}", "--window-size=1400,900", "--hide-scrollbars")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels_near(img, "#8b0000") > 200  # the critical badge
    assert pixels_near(img, "#5b7db1") > 200  # the low badges


def test_series_page_plot_shows_the_band_limit_and_alarm(live: HttpAgent, tmp_path: Path) -> None:
    r = live.get("/plot/m2%2Fvib.png?width=900&height=360")
    assert r.status_code == 200
    SCREENSHOTS.mkdir(exist_ok=True)
    (SCREENSHOTS / "plot_m2_vib.png").write_bytes(r.content)
    img = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert img.shape[:2] == (360, 900)
    assert pixels_near(img, BAND_COLOR) > 900 * 3 and pixels_near(img, LIMIT_COLOR) > 300
    assert pixels_near(img, RAISED_COLOR) > 30
    shot = SCREENSHOTS / "series_page_m2_vib.png"
    res = chromium(tmp_path, live.base + "/view/m2%2Fvib?refresh=0", f"--screenshot={shot}", "--window-size=1200,1100",
                   "--hide-scrollbars", "--virtual-time-budget=5000")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    page = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels_near(page, BAND_COLOR) > 900 * 3  # the plot was loaded into the page
