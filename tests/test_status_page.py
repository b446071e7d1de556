"""The status page of a real agent with 20 series (one in alarm), rendered by headless Chromium."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_http_live import HttpAgent, running

CHROMIUM = shutil.which("chromium") or (Path("/usr/bin/chromium").exists() and "/usr/bin/chromium") or None
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed")

HOSTILE = 'M<img src=x onerror="alert(1)">&q/x'  # must be shown as text, never become an element
SERIES = [f"M{i:02d}/temp" for i in range(19)] + [HOSTILE]
ALARM = "M07/temp"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpAgent]:
    with running(tmp_path_factory, SERIES, alarm=(ALARM, 30.0)) as (agent, _):
        yield agent

def chromium(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}", *args, url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_status_page_in_chromium(live: HttpAgent, tmp_path: Path) -> None:
    url = live.base + "/?refresh=0"
    dom = chromium(tmp_path, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    rows = re.findall(r'<tr class="row-(\w+)" data-series="([^"]*)">', page)
    shown = {html.unescape(sid): state for state, sid in rows}
    assert set(shown) == set(SERIES), sorted(shown)
    assert shown[ALARM] == "alarm"
    assert [sid for sid, state in shown.items() if state == "alarm"] == [ALARM]
    assert all(state == "normal" for sid, state in shown.items() if sid != ALARM)
    assert rows[0][1] == ALARM  # alarms first
    assert '<b id="n-alarm">1</b>' in page
    # The hostile id is text: escaped in the DOM, and no element came from it.
    assert "M&lt;img src=x onerror=" in page
    assert "<img" not in page
    # Each series links to its plot.
    assert '/plot/M07%2Ftemp.png' in page

    shot = tmp_path / "page.png"
    res = chromium(tmp_path, url, f"--screenshot={shot}", "--window-size=1280,1600", "--hide-scrollbars")
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, res.stderr[-2000:]


def test_series_detail_page_embeds_the_plot(live: HttpAgent) -> None:
    r = live.get("/view/M07%2Ftemp")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert 'src="/plot/M07%2Ftemp.png?width=1100&amp;height=420"' in r.text
    img = live.get("/plot/M07%2Ftemp.png?width=1100&height=420")
    assert img.status_code == 200 and img.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert live.get("/view/no/such").status_code == 404
