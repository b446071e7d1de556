"""/docs works on a gateway without internet: Swagger UI's assets come from the agent itself.

Headless Chromium loads the page with every host but loopback unresolvable, and the DOM it
renders must list the API's operations. Before the assets were served locally, the page
loaded Swagger UI from a CDN and rendered nothing here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_http_live import HttpAgent, running
from test_status_page import CHROMIUM, chromium

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed")

OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpAgent]:
    with running(tmp_path_factory, ["M1/temp"]) as (agent, _):
        yield agent


def test_docs_page_names_no_other_host(live: HttpAgent) -> None:
    page = live.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    for url in urls:
        assert live.get(url).status_code == 200, url


def test_docs_render_the_operations_offline_in_chromium(live: HttpAgent, tmp_path: Path) -> None:
    res = chromium(tmp_path, live.base + "/docs", OFFLINE, "--virtual-time-budget=20000", "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    # Swagger UI rendered the spec: one block per operation, with its method and path.
    paths = set(re.findall(r'data-path="([^"]+)"', dom))
    assert {"/fit/{series_id}", "/predict/{series_id}", "/healthz", "/metrics"} <= paths, sorted(paths)
    assert "opblock-post" in dom and "opblock-get" in dom
    shot = tmp_path / "docs.png"
    res = chromium(tmp_path, live.base + "/docs", OFFLINE, "--virtual-time-budget=20000",
                   f"--screenshot={shot}", "--window-size=1280,1400", "--hide-scrollbars")
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 20_000, res.stderr[-2000:]
