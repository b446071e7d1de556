"""``GET /``: the operator's status page, and ``/view/{series}`` per series.

Active alarms first (from the annunciator: priority, value and unit, direction, expected range,
how far out, since when, why, ack/shelve state; a machine's alarm with its score, threshold and
the sensors that explain it), then shelves, then the machines, then every series a page at a
time with a sparkline. The page is server-rendered and complete without JavaScript; a small
script (``page_parts.SCRIPT``) refreshes it in place (scroll and filter kept) and, once an
operator types the HTTP token, offers Ack / Shelve / Unshelve buttons.

Bounded work for 100,000 series: rows come from the shared series snapshot (``series_index``),
a page of at most ``limit`` at a time, built a slice of ``chunked.SLICE_S`` per loop pass; the filter
(``q``) is applied a chunk per loop pass too. Series ids are hostile input: every piece of
text goes through ``html.escape`` and every id in a link through ``urllib.parse.quote``.
"""

from __future__ import annotations

import time
from html import escape
from itertools import islice
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from edge_agent import __version__, operations
from edge_agent.alarm_conditions import owner_key
from edge_agent.chunked import filtered, mapped
from edge_agent.http import page_parts as parts
from edge_agent.http import series_view
from edge_agent.http.errors import ApiError, responses
from edge_agent.http.health import not_ready_reasons
from edge_agent.http.series_index import index_of
from edge_agent.series import Series

if TYPE_CHECKING:  # the agent is composed in app.py; the HTTP layer never imports it at run time
    from edge_agent.agent import Agent

router = APIRouter(tags=["page"])

STATE_ORDER = {"alarm": 0, "learning": 1, "normal": 2}
STYLE = parts.STYLE
MAX_ALARM_ROWS = 500
_ts, _val = parts.ts, parts.val


def plot_url(series_id: str, **query: int) -> str:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return f"/plot/{quote(series_id, safe='')}.png" + (f"?{qs}" if qs else "")


def view_url(series_id: str) -> str:
    return f"/view/{quote(series_id, safe='')}"


def machine_plot_url(machine_id: str, **query: int) -> str:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return f"/machine_plot/{quote(machine_id, safe='')}.png" + (f"?{qs}" if qs else "")


MAX_MACHINE_ROWS = 500  # machines.max_machines bounds them too; the rest are in GET /machines


def _machine_row(m: dict[str, Any]) -> str:
    """One machine of ``operations.list_machines``: state, model, score against its threshold,
    and the sensors that explain the score (``current high, flow low``)."""
    mid = escape(m["machine"])
    state = m["state"]
    model = m["model"]
    marks = (' <span class="shelved">shelved</span>' if m.get("shelved") else "") + \
        (" <small>acknowledged</small>" if m.get("alarm_state") == "active_acked" else "")
    return (
        f'<tr class="machine row-{escape(state)}" data-machine="{mid}">'
        f'<td><a href="/machines/{escape(quote(m["machine"], safe=""))}">{mid}</a></td>'
        f'<td><span class="state state-{escape(state)}">{escape(state)}</span>{marks}</td>'
        f'<td class="num">{m["sensors"]}</td>'
        f'<td class="num">{_val(m["last_score"])}</td>'
        f'<td class="num">{_val(model["threshold"]) if model else "-"}</td>'
        f'<td class="top">{escape(", ".join(m["top_sensors"])) or "-"}</td>'
        f'<td>{escape(model["detector"] + " v" + str(model["version"])) if model else "learning"}</td>'
        f'<td><a href="{escape(machine_plot_url(m["machine"]))}">plot</a></td>'
        "</tr>"
    )


def _row(s: Series, shelved: bool) -> str:
    v = series_view.summary(s)
    state = v["state"]
    sid = escape(s.id)
    st = s.settings
    _, recent = s.recent(parts.SPARK_POINTS)
    shelf = ' <span class="shelved">shelved</span>' if shelved else ""
    return (
        f'<tr class="row-{state}" data-series="{sid}">'
        f'<td><a href="{escape(view_url(s.id))}">{sid}</a></td>'
        f'<td><span class="state state-{state}">{state}</span>{shelf}</td>'
        f'<td><span class="prio prio-{int(st.priority)}">{escape(st.priority.label)}</span></td>'
        f'<td class="num">{_val(v["last_value"], st.unit)}</td>'
        f'<td><a href="{escape(plot_url(s.id))}">{parts.sparkline(recent)}</a></td>'
        f'<td>{_ts(v["last_ts"])}</td>'
        f'<td class="num">{v["model_version"] if v["model_version"] is not None else "-"}</td>'
        f'<td>{escape(v["detector"] or "-")}</td>'
        f'<td>{_ts(v["last_alarm_ts"])}</td>'
        "</tr>"
    )


def _doc(title: str, body: str, refresh: int | None, script: bool = False) -> str:
    # Without the script the page refreshes itself (losing the scroll position); with it the
    # script refreshes in place and the meta refresh sits inside <noscript>.
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    if script and meta:
        meta = f"<noscript>{meta}</noscript>"
    js = f"<script>{parts.SCRIPT}</script>" if script else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"{meta}<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f'<body data-refresh="{refresh or 0}">{body}{js}</body></html>'
    )


@router.get("/", response_class=HTMLResponse, summary="Status page", responses=responses(422))
async def status_page(
    request: Request,
    refresh: int = Query(10, ge=0, le=3600, description="Auto-refresh seconds (0: off)"),
    limit: int = Query(200, ge=1, le=10_000, description="Series rows per page; alarms first"),
    offset: int = Query(0, ge=0, le=10_000_000, description="First series row of the page"),
    q: str = Query("", max_length=200, description="Only series whose id contains this"),
) -> HTMLResponse:
    agent: Agent = request.app.state.agent
    ann = agent.annunciator
    # Listed a chunk per loop pass from a shared, at most 1 s old snapshot (series_index.py):
    # sorting 100,000 series on the loop for every page view cost 92 ms.
    snap = await index_of(request.app.state, agent).snapshot()
    counts = snap.counts
    live = agent.pipeline.series if agent.pipeline is not None else {}
    ordered = snap.ids(sorted(snap.by_state, key=lambda st: STATE_ORDER.get(st, 3)))
    if q:
        ordered = await filtered(list(ordered), lambda sid: q in sid)
        total = len(ordered)
    else:
        total = counts["total"]
    shown = list(islice(ordered, offset, offset + limit))

    def row(sid: str) -> str | None:
        s = live.get(sid)
        return None if s is None else _row(s, sid in ann.shelves)

    # a slice of rows by time, not by count: a row with its sparkline costs what the CPU makes it
    rows = await mapped(shown, row)
    alarm_rows = []
    conditions = ann.listing()
    for c in conditions[:MAX_ALARM_ROWS]:
        v = c.view()
        if v["machine"] is not None:  # a machine's alarm (issue 14), in the same list
            if not q or q in v["machine"]:
                alarm_rows.append(parts.machine_alarm_row(v, owner_key(machine=v["machine"]) in ann.shelves,
                                                          f"/machines/{quote(v['machine'], safe='')}"))
            continue
        if q and q not in v["series"]:
            continue
        s = live.get(v["series"])
        alarm_rows.append(parts.alarm_row(v, s.last_value if s is not None and s.n_readings else None,
                                          v["series"] in ann.shelves, view_url(v["series"])))
    active = sum(c.active for c in conditions)
    unacked = sum(c.acked_at is None for c in conditions)
    reasons = not_ready_reasons(agent)
    ready = '<span class="ok">ready</span>' if not reasons else f'<span class="bad">not ready: {escape("; ".join(reasons))}</span>'
    rate = ann.rate.count()
    flood = f' <span class="flood">FLOOD: more than {ann.flood_at} alarms in 10 min</span>' if ann.flood() else ""
    gw = escape(agent.cfg.gateway_id)
    operator = request.app.state.tokens.token is not None
    more = "" if len(conditions) <= MAX_ALARM_ROWS else f"<p>{len(conditions) - MAX_ALARM_ROWS} more alarms: <a href=\"/alarms\">all as JSON</a></p>"

    def page_link(to: int, text: str) -> str:
        query = {"offset": to, "limit": limit, "refresh": refresh, **({"q": q} if q else {})}
        return f'<a href="/?{escape(urlencode(query))}">{text}</a>'

    pager = f"series {offset + 1 if shown else 0}-{offset + len(shown)} of {total}"
    if offset > 0:
        pager = page_link(max(0, offset - limit), "&larr; previous") + " &middot; " + pager
    if offset + limit < total:
        pager += f" ({total - offset - len(shown)} more series not shown) &middot; " + page_link(offset + limit, "next &rarr;")
    machines = await operations.list_machines(agent)
    if q:
        machines = [m for m in machines if q in m["machine"]]
    machines.sort(key=lambda m: STATE_ORDER.get(m["state"], 3))  # in alarm first, then by id (stable)
    machine_rows = "".join(_machine_row(m) for m in machines[:MAX_MACHINE_ROWS])
    machine_section = "" if agent.machines is None else (
        "<h2>Machines</h2><table><thead><tr><th>machine</th><th>state</th><th>sensors</th><th>score</th><th>threshold</th>"
        "<th>explained by</th><th>model</th><th></th></tr></thead>"
        f'<tbody id="machines">{machine_rows or "<tr><td colspan=8>no machines yet</td></tr>"}</tbody></table>'
    )
    shelves = "".join(parts.shelve_row(sh.view()) for sh in list(ann.shelves.values())[:MAX_ALARM_ROWS])
    token_box = ('<label>operator token <input id="token" type="password" autocomplete="off" size="14"></label> '
                 '<span id="op-result"></span>') if operator else '<span class="meta">read-only (no http.token_file)</span>'
    body = (
        f"<h1>edge-agent {gw}</h1>"
        f'<div class="meta" id="meta">version {escape(__version__)} &middot; {ready} &middot; '
        f'alarms: active <b id="n-active">{active}</b>, unacknowledged <b id="n-unacked">{unacked}</b> &middot; '
        f'alarm rate <b id="alarm-rate">{rate}</b> / 10 min{flood} &middot; '
        f'series {counts["total"]} (alarm <b id="n-alarm">{counts["alarm"]}</b>, normal {counts["normal"]}, learning {counts["learning"]}) &middot; '
        f"outbox {agent.outbox.depth} message(s) &middot; updated {_ts(time.time())}</div>"
        f'<div><input id="filter" type="search" placeholder="filter series" value="{escape(q)}"> {token_box}</div>'
        f"<h2>Alarms</h2><table><thead>{parts.ALARM_HEAD}</thead>"
        f'<tbody id="alarms">{"".join(alarm_rows) or "<tr><td colspan=9>no alarms</td></tr>"}</tbody></table>{more}'
        "<h2>Shelved</h2><table><thead><tr><th>series / machine</th><th>reason</th><th>by</th><th>until</th><th>alarms held back</th><th></th></tr></thead>"
        f'<tbody id="shelves">{shelves or "<tr><td colspan=6>none</td></tr>"}</tbody></table>'
        f"{machine_section}"
        "<h2>Series</h2><table><thead><tr><th>series</th><th>state</th><th>priority</th><th>last value</th><th>recent</th>"
        "<th>last reading</th><th>model</th><th>detector</th><th>last alarm</th></tr></thead>"
        f'<tbody id="series">{"".join(rows)}</tbody></table><p id="pager">{pager}</p>'
        '<p class="meta"><a href="/alarms">alarms as JSON</a> &middot; <a href="/healthcheck">health</a> &middot; '
        '<a href="/metrics">metrics</a> &middot; <a href="/docs">API</a></p>'
    )
    return HTMLResponse(_doc(f"edge-agent {agent.cfg.gateway_id}", body, refresh, script=True))


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
    f = d["alarm"]["following"]
    if f is not None:  # (alarm_follow.py)
        facts.append(("following", escape(f'a move {f["direction"]} accepted by {f["accepted_by"]}: a raise that way is accepted '
                                          f'in place up to reading {f["until_reading"]} (at the latest {f["ends_at_reading"]})')))
    st = s.settings.view()
    lim = st["limits"]
    facts += [
        ("priority", f'<span class="prio prio-{st["priority"]}">{escape(st["priority_name"])}</span>'),
        ("unit", escape(st["unit"] or "-")),
        ("description", escape(st["description"] or "-")),
        ("rules", f'enabled {str(st["enabled"]).lower()}, on_delay {st["on_delay"]}, clear_after {st["clear_after"]}, '
                  f'deadband {st["deadband"]:g}, matched rules {escape(str(st["matched_rules"]))}'),
        ("limits", escape(", ".join(f"{k} {v:g}" for k, v in lim.items() if isinstance(v, int | float))) if lim else "-"),
    ]
    ann = agent.annunciator
    shelf = ann.shelves.get(s.id)
    if shelf is not None:
        facts.append(("shelved", f'<span class="shelved">{escape(shelf.reason)}</span> by {escape(shelf.by)} until {_ts(shelf.until)}'))
    alarms = "".join(parts.alarm_row(c.view(), s.last_value if s.n_readings else None, shelf is not None, view_url(s.id))
                     for c in sorted(ann.conditions.get(s.id, {}).values(), key=lambda c: (not c.active, -c.priority)))
    table = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in facts)
    body = (
        f'<p><a href="/">&larr; all series</a></p><h1>{escape(s.id)}</h1>'
        f'<img alt="plot of {escape(s.id)}" src="{escape(plot_url(s.id, width=1100, height=420))}" width="1100" height="420">'
        f'<table style="width:auto">{table}</table>'
        + (f"<h2>Alarms</h2><table><thead>{parts.ALARM_HEAD}</thead><tbody id=\"alarms\">{alarms}</tbody></table>" if alarms else "")
        +
        f'<p class="meta"><a href="/series/{escape(quote(s.id, safe=""))}">JSON</a></p>'
    )
    return HTMLResponse(_doc(f"{s.id} - edge-agent", body, refresh))
