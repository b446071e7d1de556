"""``GET /``: a server-rendered status page (no JavaScript), and ``/view/{series}`` per series.

Series ids are hostile input: every piece of text goes through ``html.escape`` and every id in
a link through ``urllib.parse.quote``.
"""

from __future__ import annotations

import asyncio
import time
from html import escape
from itertools import islice
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from edge_agent import __version__
from edge_agent.agent import Agent
from edge_agent.http import series_view
from edge_agent.http.errors import ApiError, responses
from edge_agent.http.health import not_ready_reasons
from edge_agent.http.series_index import ROWS_PER_PASS, index_of
from edge_agent.series import Series

router = APIRouter(tags=["page"])

STATE_ORDER = {"alarm": 0, "learning": 1, "normal": 2}
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em} .meta{color:#555;margin-bottom:1em}
table{border-collapse:collapse;width:100%} th,td{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{display:inline-block;min-width:5.5em;text-align:center;border-radius:3px;padding:.1em .4em;font-weight:600}
.state-alarm{background:#e41a1c;color:#fff} .state-normal{background:#c7e9c0;color:#1b5e20}
.state-learning{background:#ffe8a3;color:#6d4c00} .state-stale{background:#ddd;color:#444}
.ok{color:#1b5e20} .bad{color:#b71c1c}
"""


def _ts(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


def _val(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def plot_url(series_id: str, **query: int) -> str:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return f"/plot/{quote(series_id, safe='')}.png" + (f"?{qs}" if qs else "")


def view_url(series_id: str) -> str:
    return f"/view/{quote(series_id, safe='')}"


def _row(s: Series) -> str:
    v = series_view.summary(s)
    state = v["state"]
    sid = escape(s.id)
    return (
        f'<tr class="row-{state}" data-series="{sid}">'
        f'<td><a href="{escape(view_url(s.id))}">{sid}</a></td>'
        f'<td><span class="state state-{state}">{state}</span></td>'
        f'<td class="num">{_val(v["last_value"])}</td>'
        f'<td>{_ts(v["last_ts"])}</td>'
        f'<td class="num">{v["model_version"] if v["model_version"] is not None else "-"}</td>'
        f'<td>{escape(v["detector"] or "-")}</td>'
        f'<td>{_ts(v["last_alarm_ts"])}</td>'
        f'<td><a href="{escape(plot_url(s.id))}">plot</a></td>'
        "</tr>"
    )


def _doc(title: str, body: str, refresh: int | None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"{meta}<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


@router.get("/", response_class=HTMLResponse, summary="Status page", responses=responses(422))
async def status_page(
    request: Request,
    refresh: int = Query(10, ge=0, le=3600, description="Auto-refresh seconds (0: off)"),
    limit: int = Query(500, ge=1, le=10_000, description="Rows shown; alarms first"),
) -> HTMLResponse:
    agent: Agent = request.app.state.agent
    # Listed a chunk per loop pass from a shared, at most 1 s old snapshot (series_index.py):
    # sorting 100,000 series on the loop for every page view cost 92 ms.
    snap = await index_of(request.app.state, agent).snapshot()
    counts = snap.counts
    live = agent.pipeline.series if agent.pipeline is not None else {}
    shown = list(islice(snap.ids(sorted(snap.by_state, key=lambda st: STATE_ORDER.get(st, 3))), limit))
    parts = []
    for i in range(0, len(shown), ROWS_PER_PASS):
        parts += [_row(s) for sid in shown[i:i + ROWS_PER_PASS] if (s := live.get(sid)) is not None]
        await asyncio.sleep(0)
    reasons = not_ready_reasons(agent)
    ready = '<span class="ok">ready</span>' if not reasons else f'<span class="bad">not ready: {escape("; ".join(reasons))}</span>'
    out = agent.outbox
    gw = escape(agent.cfg.gateway_id)
    rows = "".join(parts)
    more = f"<p>{counts['total'] - limit} more series not shown (<a href=\"/series\">all as JSON</a>).</p>" if counts["total"] > limit else ""
    body = (
        f"<h1>edge-agent {gw}</h1>"
        f'<div class="meta">version {escape(__version__)} &middot; {ready} &middot; '
        f'series {counts["total"]} (alarm <b id="n-alarm">{counts["alarm"]}</b>, normal {counts["normal"]}, learning {counts["learning"]}) &middot; '
        f"outbox {out.depth} message(s) &middot; updated {_ts(time.time())}</div>"
        "<table><thead><tr><th>series</th><th>state</th><th>last value</th><th>last reading</th>"
        "<th>model</th><th>detector</th><th>last alarm</th><th></th></tr></thead>"
        f'<tbody id="series">{rows}</tbody></table>{more}'
        '<p class="meta"><a href="/healthcheck">health</a> &middot; <a href="/metrics">metrics</a> &middot; '
        '<a href="/docs">API</a></p>'
    )
    return HTMLResponse(_doc(f"edge-agent {agent.cfg.gateway_id}", body, refresh))


@router.get("/view/{series_id:path}", response_class=HTMLResponse, summary="Status page of one series", responses=responses(404, 422))
async def series_page(request: Request, series_id: str, refresh: int = Query(10, ge=0, le=3600)) -> HTMLResponse:
    agent: Agent = request.app.state.agent
    s = series_view.series_or_none(agent, series_id)
    if s is None:
        raise ApiError(404, "unknown_series", f"no series {series_id!r}")
    d = series_view.detail(s)
    m = d["model"]
    band = m["band"] if m else None
    facts = [
        ("state", f'<span class="state state-{d["state"]}">{d["state"]}</span>'),
        ("model", escape(f'{m["detector"]} v{m["version"]}') if m else "learning"),
        ("threshold", _val(m["threshold"]) if m else "-"),
        ("normal band", f"{_val(band[0])} .. {_val(band[1])}" if band else "-"),
        ("last value", f'{_val(d["readings"]["last_value"])} at {_ts(d["readings"]["last_ts"])}'),
        ("readings", str(d["readings"]["total"])),
        ("alarms raised", str(d["alarm"]["alarms_raised"])),
        ("last alarm", _ts(d["alarm"]["last_alarm_ts"])),
    ]
    table = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in facts)
    body = (
        f'<p><a href="/">&larr; all series</a></p><h1>{escape(s.id)}</h1>'
        f'<img alt="plot of {escape(s.id)}" src="{escape(plot_url(s.id, width=1100, height=420))}" width="1100" height="420">'
        f'<table style="width:auto">{table}</table>'
        f'<p class="meta"><a href="/series/{escape(quote(s.id, safe=""))}">JSON</a></p>'
    )
    return HTMLResponse(_doc(f"{s.id} - edge-agent", body, refresh))
