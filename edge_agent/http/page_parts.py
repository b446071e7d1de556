"""Pieces of the status page (``page.py``): the active-alarm rows (of series and machines),
sparklines, style and script.

Everything shown is escaped (``html.escape``; ids in links ``urllib.parse.quote``): series ids,
units and messages are hostile input. The script only fetches this same page and swaps the
parts that change (scroll position, the filter and the operator's token stay), and posts ack /
shelve / unshelve with the bearer token an operator typed (kept in ``sessionStorage``, never
sent anywhere else). Without the token, or without JavaScript, the page is read-only.
"""

from __future__ import annotations

import math
import time
from html import escape
from typing import Any
from urllib.parse import quote

import numpy as np

from edge_agent.alarm_message import LIMIT_NAMES

SPARK_POINTS = 60
SPARK_W, SPARK_H = 120, 24

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.05em;margin:1.2em 0 .4em} .meta{color:#555;margin-bottom:.6em}
table{border-collapse:collapse;width:100%} th,td{padding:.3em .5em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{background:#f4f4f4;position:sticky;top:0} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.state{display:inline-block;min-width:5.5em;text-align:center;border-radius:3px;padding:.1em .4em;font-weight:600}
.state-alarm{background:#e41a1c;color:#fff} .state-normal{background:#c7e9c0;color:#1b5e20}
.state-learning{background:#ffe8a3;color:#6d4c00} .state-stale{background:#ddd;color:#444} .state-disabled{background:#eee;color:#777}
.prio{display:inline-block;min-width:4.8em;text-align:center;border-radius:3px;padding:.1em .3em;font-weight:700;color:#fff}
.prio-4{background:#8b0000} .prio-3{background:#e4572e} .prio-2{background:#e0a800;color:#222} .prio-1{background:#5b7db1}
tr.cleared_unacked td{color:#666} tr.unacked td.ack{font-weight:700;color:#b71c1c} .shelved{color:#6a1b9a;font-weight:600}
.why{max-width:34em;font-size:.9em} .ok{color:#1b5e20} .bad{color:#b71c1c} .flood{background:#b71c1c;color:#fff;padding:.1em .4em;border-radius:3px}
.ops{display:none} body.operator .ops{display:inline} button{font-size:.85em;margin:0 .15em}
#filter{width:18em;padding:.2em .4em} svg.spark{vertical-align:middle}
"""

SCRIPT = """
(function(){
  const tok = () => sessionStorage.getItem('edgeAgentToken') || '';
  const field = document.getElementById('token');
  function mode(){ document.body.classList.toggle('operator', !!tok()); if (field) field.value = tok() ? '********' : ''; }
  if (field) field.addEventListener('change', () => { sessionStorage.setItem('edgeAgentToken', field.value.trim()); mode(); });
  const filter = document.getElementById('filter');
  function applyFilter(){
    const q = (filter.value || '').toLowerCase();
    document.querySelectorAll('tr[data-series], tr[data-machine]').forEach(tr => {
      const id = tr.dataset.series !== undefined ? tr.dataset.series : tr.dataset.machine;
      tr.style.display = !q || id.toLowerCase().includes(q) ? '' : 'none'; });
  }
  filter.addEventListener('input', applyFilter);
  filter.addEventListener('keydown', ev => { if (ev.key === 'Enter') {  // the whole list, not only this page
    const u = new URL(location.href); u.searchParams.set('q', filter.value); u.searchParams.set('offset', '0'); location.href = u; } });
  function ages(){
    const now = Date.now() / 1000;
    document.querySelectorAll('[data-since]').forEach(el => { el.textContent = dur(now - parseFloat(el.dataset.since)); });
  }
  function dur(s){ s = Math.max(0, Math.round(s)); if (s < 120) return s + ' s'; if (s < 7200) return Math.round(s/60) + ' min';
    if (s < 172800) return (s/3600).toFixed(1) + ' h'; return (s/86400).toFixed(1) + ' d'; }
  async function act(path, body){
    const r = await fetch(path, {method: 'POST', headers: {'Authorization': 'Bearer ' + tok(), 'Content-Type': 'application/json'},
                                 body: JSON.stringify(body)});
    const msg = document.getElementById('op-result');
    let text = r.status + ''; try { const j = await r.json(); text += ' ' + (j.detail || j.error || 'ok'); } catch (e) {}
    msg.textContent = r.ok ? 'done' : text; msg.className = r.ok ? 'ok' : 'bad'; refresh();
  }
  document.addEventListener('click', ev => {
    const b = ev.target.closest('button[data-op]'); if (!b) return;
    const machine = b.dataset.machine !== undefined;  // a machine's alarm: /machine_ack/{id}, ...
    const sid = machine ? b.dataset.machine : b.dataset.series;
    const path = '/' + (machine ? 'machine_' : '') + b.dataset.op + '/' + encodeURIComponent(sid);
    if (b.dataset.op === 'ack') act(path, b.dataset.condition ? {condition: b.dataset.condition} : {});
    else if (b.dataset.op === 'unshelve') act(path, {});
    else { const min = parseFloat(prompt('Shelve ' + sid + ' for how many minutes?', '60'));
           const reason = min > 0 ? prompt('Reason (required)', '') : null;
           if (reason) act(path, {duration_s: min * 60, reason: reason}); }
  });
  const every = parseInt(document.body.dataset.refresh || '0', 10);
  async function refresh(){
    try {
      const r = await fetch(location.href, {headers: {'Accept': 'text/html'}}); if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
      for (const id of ['meta', 'alarms', 'shelves', 'machines', 'series', 'pager']) {
        const a = document.getElementById(id), b = doc.getElementById(id); if (a && b) a.innerHTML = b.innerHTML; }
      applyFilter(); ages();
    } catch (e) {}
  }
  if (every > 0) setInterval(refresh, every * 1000);
  setInterval(ages, 1000); mode(); applyFilter(); ages();
})();
"""


def ts(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z"


def val(x: float | None, unit: str | None = None, digits: int = 6) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}" + (f"&nbsp;{escape(unit)}" if unit else "")


def duration(s: float) -> str:
    s = max(0.0, s)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h" if s < 172800 else f"{s / 86400:.1f} d"


def out_by(value: float | None, expected: dict[str, Any] | None, unit: str | None) -> str:
    """How far ``value`` is outside the expected range, with the unit; '-' when inside or unknown."""
    if value is None or not expected:
        return "-"
    lo, hi = expected.get("low"), expected.get("high")
    if hi is not None and value > hi:
        return "+" + val(value - hi, unit, 4) + " above"
    if lo is not None and value < lo:
        return "&minus;" + val(lo - value, unit, 4) + " below"
    return "inside"


def sparkline(values: np.ndarray, band: tuple[float, float] | None = None) -> str:
    """A tiny inline SVG of the last readings (no request per row)."""
    v = values[-SPARK_POINTS:]
    v = v[np.isfinite(v)]
    if v.shape[0] < 2:
        return ""
    lo, hi = float(v.min()), float(v.max())
    span = (hi - lo) or 1.0
    xs = np.linspace(1, SPARK_W - 1, v.shape[0])
    ys = SPARK_H - 2 - (v - lo) / span * (SPARK_H - 4)
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs.tolist(), ys.tolist(), strict=True))
    return (f'<svg class="spark" width="{SPARK_W}" height="{SPARK_H}" viewBox="0 0 {SPARK_W} {SPARK_H}" aria-hidden="true">'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.2" points="{pts}"/></svg>')


def alarm_row(c: dict[str, Any], now_value: float | None, shelved: bool, view_url: str) -> str:
    """One alarm condition (``Condition.view()``) as a row of the active-alarm table."""
    sid = escape(c["series"])
    unit = c.get("unit")
    cond = c["condition"]
    what = "model" if cond == "model" else LIMIT_NAMES.get(cond, cond) + " limit"
    expected = c.get("expected") or {}
    low, high = expected.get("low"), expected.get("high")
    if low is not None and high is not None:
        exp = f"{val(low, None, 4)} .. {val(high, unit, 4)}"
    elif low is not None or high is not None:
        exp = f"&ge;&nbsp;{val(low, unit, 4)}" if low is not None else f"&le;&nbsp;{val(high, unit, 4)}"
    else:
        exp = "-"
    value = now_value if c["active"] and now_value is not None else c.get("value")
    direction = {"up": "&uarr; up", "down": "&darr; down"}.get(c.get("direction") or "", escape(c.get("direction") or "-"))
    kind = escape((c.get("kind") or "").replace("_", " ") or "-")
    ack_state = ("acknowledged by " + escape(c.get("acked_by") or "?")) if c["acked"] else "unacknowledged"
    state = ("active" if c["active"] else "cleared") + ", " + ack_state + ('<br><span class="shelved">shelved</span>' if shelved else "")
    since = c.get("raised_ts") or c.get("raised_at")
    ops = ""
    if not c["acked"]:
        ops += f'<button data-op="ack" data-series="{sid}" data-condition="{escape(cond)}">Ack</button>'
    ops += f'<button data-op="{"unshelve" if shelved else "shelve"}" data-series="{sid}">{"Unshelve" if shelved else "Shelve"}</button>'
    return (
        f'<tr class="alarm-row {escape(c["state"])} {"unacked" if not c["acked"] else "acked"}" data-series="{sid}" '
        f'data-condition="{escape(cond)}" data-priority="{int(c["priority"])}">'
        f'<td><span class="prio prio-{int(c["priority"])}">{escape(c["priority_name"])}</span></td>'
        f'<td><a href="{escape(view_url)}">{sid}</a><br><small>{escape(what)}</small></td>'
        f'<td class="num value">{val(value, unit)}</td>'
        f'<td>{direction}</td>'
        f'<td class="num">{exp}</td>'
        f'<td class="num">{out_by(value, expected, unit)}</td>'
        f'<td class="num"><span class="since" data-since="{since}">{duration(time.time() - since) if since else "-"}</span>'
        f'<br><small>{ts(since)}</small></td>'
        f'<td class="why"><b>{kind}</b>: {escape(c.get("message") or "")}</td>'
        f'<td class="ack">{state}<span class="ops"><br>{ops}</span></td>'
        "</tr>"
    )


ALARM_HEAD = ("<tr><th>priority</th><th>series / machine</th><th>value</th><th>direction</th><th>expected</th><th>out by</th>"
              "<th>since</th><th>why</th><th>state</th></tr>")


def shelve_row(sh: dict[str, Any]) -> str:
    """A shelve (``Shelve.view()``) of a series, or of a machine (marked so, its button posting
    to ``/machine_unshelve``)."""
    machine = sh.get("machine") is not None
    attr = "data-machine" if machine else "data-series"
    oid = escape(sh["machine"] if machine else sh["series"])
    label = f'{oid}<br><small>machine</small>' if machine else oid
    return (f'<tr {attr}="{oid}"><td>{label}</td><td>{escape(sh["reason"])}</td><td>{escape(sh["by"])}</td>'
            f'<td>until {ts(sh["until"])}</td><td class="num">{int(sh["suppressed"])}</td>'
            f'<td><span class="ops"><button data-op="unshelve" {attr}="{oid}">Unshelve</button></span></td></tr>')


def machine_alarm_row(c: dict[str, Any], shelved: bool, link: str) -> str:
    """A machine's alarm condition (``Condition.view()``) as a row of the same table: its score
    against the threshold where a series shows its value against the expected range, and the
    sensors that explain it where a series shows its direction."""
    mid = escape(c["machine"])
    score, threshold = c.get("score"), c.get("threshold")
    ratio = f"{score / threshold:.2g}&times; threshold" if isinstance(score, int | float) and isinstance(threshold, int | float) \
        and threshold > 0 else "-"
    named = ", ".join(f"{s.get('sensor')} {s.get('kind') or ('high' if (s.get('z') or 0) > 0 else 'low')}"
                      for s in c.get("sensors") or [])
    ack_state = ("acknowledged by " + escape(c.get("acked_by") or "?")) if c["acked"] else "unacknowledged"
    state = ("active" if c["active"] else "cleared") + ", " + ack_state + ('<br><span class="shelved">shelved</span>' if shelved else "")
    since = c.get("raised_ts") or c.get("raised_at")
    ops = "" if c["acked"] else f'<button data-op="ack" data-machine="{mid}">Ack</button>'
    ops += f'<button data-op="{"unshelve" if shelved else "shelve"}" data-machine="{mid}">{"Unshelve" if shelved else "Shelve"}</button>'
    return (
        f'<tr class="alarm-row machine-alarm {escape(c["state"])} {"unacked" if not c["acked"] else "acked"}" data-machine="{mid}" '
        f'data-condition="model" data-priority="{int(c["priority"])}">'
        f'<td><span class="prio prio-{int(c["priority"])}">{escape(c["priority_name"])}</span></td>'
        f'<td><a href="{escape(link)}">{mid}</a><br><small>machine</small></td>'
        f'<td class="num value">score {val(score, None, 3)}</td>'
        f'<td class="top">{escape(named) or "-"}</td>'
        f'<td class="num">&lt;&nbsp;{val(threshold, None, 3)}</td>'
        f'<td class="num">{ratio}</td>'
        f'<td class="num"><span class="since" data-since="{since}">{duration(time.time() - since) if since else "-"}</span>'
        f'<br><small>{ts(since)}</small></td>'
        f'<td class="why"><b>machine</b>: {escape(c.get("message") or "")}</td>'
        f'<td class="ack">{state}<span class="ops"><br>{ops}</span></td>'
        "</tr>"
    )


def series_url(series_id: str) -> str:
    return f"/view/{quote(series_id, safe='')}"
