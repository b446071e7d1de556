"""Turn bench results into headline figures and bench/report.md."""

from __future__ import annotations

from typing import Any


def _get(d: Any, *path: Any, default: Any = None) -> Any:
    for p in path:
        try:
            d = d[p]
        except (KeyError, IndexError, TypeError):
            return default
    return d


def _h(out: dict, key: str, part: str, label: str, value: Any, unit: str, target: float | None = None, better: str = "low") -> None:
    if value is None:
        return
    met = None
    if target is not None:
        met = bool(value <= target) if better == "low" else bool(value >= target)
    out[key] = {"part": part, "label": label, "value": value, "unit": unit, "target": target, "better": better, "met": met}


def headline(report: dict[str, Any]) -> dict[str, Any]:
    P = report.get("parts", {})
    h: dict[str, Any] = {}
    sc = P.get("scoring", {})
    for name, d in sorted(_get(sc, "detectors", default={}).items()):
        tgt = {"statistical": 10.0, "isolation_forest": 50.0, "robust": 5.0}.get(name)
        label = f"score_one p99, {name}" + (f" ({sc['robust_build'].split(' (')[0]})" if name == "robust" and "robust_build" in sc else "")
        if name == "robust_interpreted":
            label = "score_one p99, robust interpreted (its source, as a wheel runs it)"
        _h(h, f"scoring.{name}.p99_us", "scoring", label, _get(d, "score_one", "p99"), "µs", tgt)
    ctl = _get(sc, "detectors", "robust", "score_one_against_control")
    if ctl:
        _h(h, "scoring.robust.p99_over_median", "scoring", "score_one p99 / median, robust (alternating with the control)",
           ctl["robust"]["p99_over_median"], "x")
        _h(h, "scoring.control.p99_over_median", "scoring", "p99 / median of a fixed workload as long (this machine's jitter)",
           ctl["control"]["p99_over_median"], "x")
    _h(h, "scoring.pipeline.p99_us", "scoring", "Pipeline.process p99 (statistical)", _get(sc, "pipeline_process", "p99"), "µs")
    _h(h, "scoring.ingest.p99_us", "scoring", "Ingest.handle p99 (route+decode+score)", _get(sc, "ingest_handle", "p99"), "µs")
    rp = _get(sc, "receive_path", "cpu_us_per_packet") or {}
    for key, label in (("asyncio/gmqtt_reader", "gmqtt's reader, standard loop (before)"),
                       ("asyncio/edge_framing", "edge framing, standard loop (default)"),
                       ("uvloop/edge_framing", "edge framing, uvloop (event_loop: uvloop)")):
        _h(h, f"scoring.receive.{key.replace('/', '.')}_us", "scoring", f"loop CPU per arriving reading, {label}",
           (rp.get(key) or {}).get("median_us"), "µs")
    mc = P.get("machines", {})
    _h(h, "machines.score_row_8.p99_us", "machines", "machine row scored p99, 8 sensors (baseline_t2)", _get(mc, "score_row", "8", "p99"), "µs", 30.0)
    _h(h, "machines.feed_row.p99_us", "machines", "MachineSet.feed_row p99 (assemble + score + decide, 8 sensors)", _get(mc, "machineset_feed_row_per_row", "p99"), "µs")
    _h(h, "machines.ingest_json_multi.p99_us", "machines", "Ingest.handle p99, json_multi of 8 (8 series + the machine)",
       _get(mc, "ingest_json_multi", "series_and_machine", "p99"), "µs")
    _h(h, "machines.memory_kb", "machines", "memory per machine (8 sensors, model + full row buffer)",
       (_get(mc, "memory", "bytes_per_machine") or 0) / 1024 or None, "kB")
    _h(h, "machines.agent_cpu_per_row_us", "machines", "agent process CPU per machine row (json_multi of 8, with vs without machine)",
       _get(mc, "agent", "machine_cpu_us_per_row"), "µs")
    tp = P.get("throughput", {})
    _h(h, "throughput.agent_per_s", "throughput", "agent drain rate (readings/s, no loss)", _get(tp, "agent", "readings_per_s"), "/s")
    _h(h, "throughput.raw_per_s", "throughput", "mosquitto_sub raw receive rate", _get(tp, "raw", "messages_per_s"), "/s")
    _h(h, "throughput.ratio", "throughput", "agent / raw broker", _get(tp, "ratio"), "×", 0.5, "high")
    lat = P.get("latency", {})
    _h(h, "latency.achieved_rate", "latency", "publish rate achieved", _get(lat, "publish", "achieved_per_s"), "/s", 10_000 * 0.95, "high")
    _h(h, "latency.p50_ms", "latency", "reading → alarm p50", _get(lat, "latency_ms", "median"), "ms")
    _h(h, "latency.p99_ms", "latency", "reading → alarm p99 at 10k/s", _get(lat, "latency_ms", "p99"), "ms", 5.0)
    _h(h, "latency.max_ms", "latency", "reading → alarm max", _get(lat, "latency_ms", "max"), "ms")
    _h(h, "latency.floor_p99_ms", "latency", "floor: reading → subscriber p99, no agent (one hop)", _get(lat, "floor_no_agent", "latency_ms", "p99"), "ms")
    sl = P.get("sideload", {})
    for case in ("fit", "plot"):
        _h(h, f"sideload.{case}.p99_ms", "sideload", f"reading → alarm p99 during {case} load", _get(sl, case, "latency_ms", "p99"), "ms", 10.0)
    _h(h, "sideload.plot.agent_score_p99_ms", "sideload", "agent's own scoring p99 (/healthcheck) during plot load",
       _get(sl, "plot", "agent_inference_latency_ms", "p99_ms"), "ms")
    mem = P.get("memory", {})
    _h(h, "memory.idle_mb", "memory", "RSS idle", _get(mem, "idle_rss_mb"), "MB")
    for st in _get(mem, "stages", default=[]):
        n = st["series"]
        _h(h, f"memory.rss_{n}_mb", "memory", f"RSS with {n:,} series (full buffers)", st["rss_full_buffers_mb"], "MB", 120.0 if n == 1000 else None)
        _h(h, f"memory.per_series_{n}_kb", "memory", f"per series ({n:,})", st["per_series_kb"], "kB")
    _h(h, "memory.junk_per_series_bytes", "memory", "per one-reading junk series (RSS growth)", _get(mem, "junk_one_reading_series", "per_series_bytes"), "B")
    su = P.get("startup", {})
    for st in _get(su, "by_models", default=[]):
        n = st["models"]
        _h(h, f"startup.{n}_models_s", "startup", f"start → ready, {n:,} models (median)", _get(st, "start_to_ready_s", "median"), "s", 2.0 if n == 1000 else None)
    so = P.get("soak", {})
    _h(h, "soak.alarms_missing", "soak", f"soak ({_get(so, 'minutes')} min): acknowledged spikes without an alarm at SCADA", _get(so, "alarms_missing"), "", 0)
    _h(h, "soak.rss_growth_pct", "soak", "soak: RSS second half vs first half after warm-up",
       None if _get(so, "rss_mb", "growth") is None else round(100 * _get(so, "rss_mb", "growth"), 2), "%", 10.0)
    hp = P.get("http", {})
    _h(h, "http.req_per_s", "http", "POST /predict requests/s at 100 clients", _get(hp, "requests_per_s"), "/s")
    _h(h, "http.p99_ms", "http", "POST /predict latency p99", _get(hp, "latency_ms", "p99"), "ms")
    spb = P.get("sparkplug", {})
    for k in ("1", "10", "100"):
        _h(h, f"sparkplug.decode_{k}.us_per_metric", "sparkplug", f"Sparkplug DDATA decode per metric, {k}-metric messages (median)",
           _get(spb, "decode", k, "us_per_metric_median"), "µs")
    _h(h, "sparkplug.ratio_1", "sparkplug", "Sparkplug ingest / JSON ingest, readings/s (1 metric per DDATA)", _get(spb, "ratio_1_metric"), "×")
    _h(h, "sparkplug.ratio_10", "sparkplug", "Sparkplug ingest / JSON ingest, readings/s (10 metrics per DDATA)", _get(spb, "ratio_10_metrics"), "×")
    return h


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        a = abs(v)
        s = f"{v:,.0f}" if a >= 1000 else f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"
        return s
    return str(v)


def headline_text(h: dict[str, Any]) -> str:
    lines = ["Headline figures:"]
    for _k, v in h.items():
        tgt = ""
        if v["target"] is not None:
            op = "≤" if v["better"] == "low" else "≥"
            tgt = f"   target {op} {_fmt(v['target'])} {v['unit']}: {'MET' if v['met'] else 'MISSED'}"
        lines.append(f"  {v['label']:<58} {_fmt(v['value']):>12} {v['unit']}{tgt}")
    return "\n".join(lines)


STAT_COLS = ("min", "avg", "median", "p95", "p99", "max")


def _stat_row(name: str, s: dict[str, Any] | None, extra: list[str] | None = None) -> str:
    s = s or {}
    cells = [name, _fmt(s.get("n"))] + [_fmt(s.get(c)) for c in STAT_COLS] + (extra or [])
    return "| " + " | ".join(cells) + " |"


def _stat_header(first: str, extra: list[str] | None = None) -> list[str]:
    cols = [first, "n", *STAT_COLS, *(extra or [])]
    return ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["--:"] * (len(cols) - 1)) + "|"]


def markdown(report: dict[str, Any], history: list[dict[str, Any]]) -> str:
    m = report.get("machine", {})
    P = report.get("parts", {})
    h = report.get("headline", {})
    L: list[str] = []
    L += ["# edge-agent performance report", "",
          "Generated by `make bench` (`python -m bench.run`); regenerate rather than edit. "
          "All parts run against a real mosquitto on 127.0.0.1 started by the bench; the agent is a real "
          "`python -m edge_agent run` process unless a part says *in process*.", ""]
    L += ["## Machine", "", "| | |", "|---|---|"]
    for k in ("date", "cores", "cpu_model", "memory_gib", "python", "platform", "mosquitto", "git_commit", "edge_agent_dirty", "loadavg_at_start"):
        L.append(f"| {k} | {_fmt(m.get(k)) if not isinstance(m.get(k), (list, tuple)) else ', '.join(f'{x:.2f}' for x in m.get(k))} |")
    L += ["", "Noise: this is a shared 2-core VM with other work running; absolute figures move by "
          "±20–30 % between runs, so compare ratios measured in the same run. Client, broker and agent share the "
          "same 2 cores in every end-to-end part.", ""]
    if report.get("quick"):
        L += ["**This report was produced with `--quick`** (shorter runs, noisier).", ""]
    L += ["## Headline figures and targets", "", "| figure | value | target | met |", "|---|--:|--:|:-:|"]
    for v in h.values():
        tgt = "" if v["target"] is None else ("≤ " if v["better"] == "low" else "≥ ") + _fmt(v["target"]) + f" {v['unit']}"
        met = "" if v["met"] is None else ("✅" if v["met"] else "❌")
        L.append(f"| {v['label']} | {_fmt(v['value'])} {v['unit']} | {tgt} | {met} |")
    L.append("")
    for name, fn in (("scoring", _md_scoring), ("machines", _md_machines), ("throughput", _md_throughput), ("latency", _md_latency),
                     ("sideload", _md_sideload), ("memory", _md_memory), ("startup", _md_startup), ("http", _md_http), ("sparkplug", _md_sparkplug),
                     ("livestate", _md_livestate), ("soak", _md_soak)):
        part = P.get(name)
        if part is None:
            continue
        if "error" in part:
            L += [f"## {name}", "", f"**failed**: `{part['error']}` ({part.get('measured_at')})", ""]
            continue
        L += fn(part)
        L += [f"_measured {part.get('measured_at')}, {part.get('part_seconds', '?')} s{', --quick' if part.get('quick') else ''}_", ""]
    L += _md_comparisons(P)
    L += _md_history(history)
    return "\n".join(L) + "\n"


def _md_scoring(p: dict[str, Any]) -> list[str]:
    L = ["## 1. Scoring (in process)", "",
         f"One reading: `score_one(value, ts)` timed call by call with `perf_counter_ns` over {p['calls_per_detector']:,} calls after 5,000 "
         "warm-up calls (a reading a minute, after a 2,000-reading fit; 1 % of readings anomalous), GC disabled during the timed loop. *corrected* subtracts the median cost of an empty timed call "
         f"({_fmt(_get(p, 'timer_overhead', 'median'))} µs). Microseconds.", ""]
    L += _stat_header("detector", ["median corr.", "p99 corr.", "score_many (100k) samples/s", "fit 2,000 s"])
    for name, d in sorted(p["detectors"].items()):
        s = d["score_one"]
        L.append(_stat_row(name, s, [_fmt(s["median_corrected"]), _fmt(s["p99_corrected"]),
                                     _fmt(d["score_many_100k_samples_per_s"]["median"]), _fmt(d["fit_2000_s"])]))
    made_of = p["detectors"].get("robust", {}).get("score_one_p99_made_of")
    if made_of:
        L += ["", "What `robust`'s p99 is made of (a further half as many readings, each labelled by the part of its slow cycle it did "
              "and whether it taught the daily profile; docs/detectors.md, \"Cost\"):", "",
              "| reading did | share of readings | median µs | p99 µs | share of the slowest 1 % |", "|---|--:|--:|--:|--:|"]
        for label, r in made_of.items():
            L.append(f"| {label} | {r['share'] * 100:.1f} % | {_fmt(r['median_us'])} | {_fmt(r['p99_us'])} | {r['share_of_slowest_1pct'] * 100:.1f} % |")
    if "robust_build" in p:
        L += ["", f"`robust` here is {p['robust_build']} (edge_agent/detectors/native.py); *robust_interpreted* is the same "
              "source loaded interpreted beside it, as a wheel or the container image runs it."]
    for key in ("robust", "robust_interpreted"):
        ctl = p["detectors"].get(key, {}).get("score_one_against_control")
        if not ctl:
            continue
        r, c = ctl["robust"], ctl["control"]
        L += ["", f"`{key}` against a control ({ctl['calls_each']:,} calls each, alternately call by call, so both see the same "
              f"machine): a fixed loop of float arithmetic on slots ({ctl['control_rounds']} rounds, chosen so its median matches), the same "
              "bytecodes on every call. Its p99 / median is what this machine adds to any code of that length; `robust`'s beyond it "
              "is its own (its slow phases and branches).", "",
              "| | median µs | p99 µs | p99 / median |", "|---|--:|--:|--:|",
              f"| {key} | {_fmt(r['median_us'])} | {_fmt(r['p99_us'])} | {_fmt(r['p99_over_median'])} |",
              f"| control | {_fmt(c['median_us'])} | {_fmt(c['p99_us'])} | {_fmt(c['p99_over_median'])} |"]
    L += ["", "Whole paths, 1,000 trained statistical series, 1 % anomalous readings (µs per call):", ""]
    L += _stat_header("path", ["median corr.", "p99 corr."])
    for key, label in (("pipeline_process", "`Pipeline.process`"), ("ingest_handle", "`Ingest.handle` (route + JSON decode + process)")):
        s = p.get(key, {})
        L.append(_stat_row(label, s, [_fmt(s.get("median_corrected")), _fmt(s.get("p99_corrected"))]))
    L += ["", "`Pipeline.process` here calls `on_alarm = list.append`: the JSON encoding and outbox of a real alarm are not in it "
          "(they are in the end-to-end parts).", ""]
    rp = p.get("receive_path")
    if rp:
        L += ["Receiving, before any of that: event-loop CPU per arriving packet when packets arrive one per read "
              f"({rp['packets']:,} small PUBLISH packets at {_fmt(rp['rate_per_s'])}/s from a forked sender over a socketpair; "
              f"receiving thread's CPU time / packets; median of {rp['repeats']} interleaved runs, µs). *bare* is an "
              "`asyncio.Protocol` that only counts (the loop's own floor); *gmqtt reader* is gmqtt's StreamReader and reader "
              "task; *edge framing* is `mqtt_framing.FramingProtocol`, which the agent uses. The agent runs on the standard loop "
              "unless `event_loop: uvloop` (why: `edge_agent/event_loop.py`); every other part of this report uses the default.", "",
              "| event loop | bare | gmqtt reader | edge framing |", "|---|--:|--:|--:|"]
        rows = rp["cpu_us_per_packet"]
        for lp in ("asyncio", "uvloop"):
            cells = [_fmt(rows.get(f"{lp}/{pr}", {}).get("median_us")) for pr in ("bare", "gmqtt_reader", "edge_framing")]
            L.append(f"| {lp} | " + " | ".join(cells) + " |")
        L.append("")
    return L


def _md_machines(p: dict[str, Any]) -> list[str]:
    L = ["## 1b. Machines (in process, then through the agent)", "",
         f"`baseline_t2` fitted on the first 400 rows of {p.get('data')} (8 sensors; 16 and 32 synthetic), each row timed "
         f"with `perf_counter_ns` over {_fmt(p.get('calls'))} calls (a quarter for 16/32), GC off. Microseconds.", ""]
    L += _stat_header("path", ["median corr.", "p99 corr."])
    for n, s in sorted((p.get("score_row") or {}).items(), key=lambda kv: int(kv[0])):
        L.append(_stat_row(f"score_row, {n} sensors", s, [_fmt(s["median_corrected"]), _fmt(s["p99_corrected"])]))
    for key, label in (("machineset_feed_row_per_row", "MachineSet.feed_row (one message of 8)"),
                       ("machineset_feed_per_row", "MachineSet.feed x 8 (one topic per sensor)")):
        s = p.get(key)
        if s:
            L.append(_stat_row(label, s, [_fmt(s["median_corrected"]), _fmt(s["p99_corrected"])]))
    for key, label in (("series_and_machine", "Ingest.handle json_multi, 8 series + machine"), ("series_only", "Ingest.handle json_multi, 8 series only")):
        s = _get(p, "ingest_json_multi", key)
        if s:
            L.append(_stat_row(label, s, [_fmt(s["median_corrected"]), _fmt(s["p99_corrected"])]))
    mem = p.get("memory") or {}
    L += ["", f"Memory per machine ({_fmt(mem.get('sensors'))} sensors, fitted, {_fmt(mem.get('buffer_rows'))} complete rows held): "
          f"{_fmt((mem.get('bytes_per_machine') or 0) / 1024)} kB by tracemalloc over {_fmt(mem.get('machines'))} machines, "
          f"of which the row buffer {_fmt((mem.get('buffer_bytes_per_machine') or 0) / 1024)} kB (`machines.buffer_rows`).", ""]
    ag = p.get("agent") or {}
    if ag.get("series_and_machine"):
        wm, wo = ag["series_and_machine"], ag["series_only"]
        L += [f"Through the agent's path (a real `edge-agent run` draining {_fmt(wm.get('messages'))} json_multi messages of "
              f"{_fmt(ag.get('readings_per_message'))} readings from mosquitto): agent CPU {_fmt(wm.get('cpu_us_per_message'))} µs "
              f"per message with the machine, {_fmt(wo.get('cpu_us_per_message'))} µs without: "
              f"**{_fmt(ag.get('machine_cpu_us_per_row'))} µs per machine row** (assemble, score, decide, MQTT receive shared). "
              f"The agent's own score-latency histogram: median <= {_fmt(wm.get('score_row_p50_bucket_us'))} µs, "
              f"p99 <= {_fmt(wm.get('score_row_p99_bucket_us'))} µs (bucket bounds); {_fmt(wm.get('rows_scored'))} rows scored, "
              f"{_fmt(wm.get('alarms_raised'))} machine alarms raised on the anomaly-free recording.", ""]
    return L


def _md_throughput(p: dict[str, Any]) -> list[str]:
    a, r = p.get("agent", {}), p.get("raw", {})
    L = ["## 2. Throughput (end to end, pre-queued)", "", p.get("method", ""), "",
         "| receiver | messages | seconds | messages/s | check |", "|---|--:|--:|--:|---|"]
    L.append(f"| mosquitto_sub -C N (raw broker) | {_fmt(r.get('messages'))} | {_fmt(r.get('seconds'))} | {_fmt(r.get('messages_per_s'))} | received {_fmt(r.get('received'))} |")
    L.append(f"| edge-agent (statistical, 1,000 series) | {_fmt(a.get('readings'))} | {_fmt(a.get('seconds'))} | {_fmt(a.get('readings_per_s'))} | "
             f"scored {_fmt(a.get('scored'))}; /metrics lower bound {_fmt(a.get('readings_per_s_from_metrics_lower_bound'))}/s; agent CPU {_fmt(a.get('cpu_percent_of_one_core'))} % of a core; raised {_fmt(a.get('raised_received'))}/{_fmt(a.get('raised_expected'))}, "
             f"cleared {_fmt(a.get('cleared_received'))}/{_fmt(a.get('cleared_expected'))}, lost {_fmt(a.get('lost'))}, dup {_fmt(a.get('duplicates'))} |")
    L += ["", f"**agent / raw broker = {_fmt(p.get('ratio'))}** (target ≥ 0.5). Agent rate over time (1 s windows, readings/s): "
          f"{', '.join(_fmt(x) for x in p.get('agent_rate_timeline', [])[:30])}", ""]
    if p.get("notes"):
        L += [f"- {n}" for n in p["notes"]] + [""]
    return L


def _lat_block(d: dict[str, Any], title: str) -> list[str]:
    pub = d.get("publish", {})
    chk = d.get("check", {})
    L = [f"Publish: {_fmt(pub.get('readings'))} readings over {_fmt(pub.get('seconds'))} s by {pub.get('processes')} publisher processes, "
         f"**achieved {_fmt(pub.get('achieved_per_s'))} readings/s** (target rate {_fmt(pub.get('target_per_s'))}/s; "
         f"QoS {pub.get('qos')}). Check: {_fmt(chk.get('anomalies_injected'))} anomalies injected, {_fmt(chk.get('raised_received'))} raised alarms received, "
         f"lost {_fmt(chk.get('lost'))}, duplicates {_fmt(chk.get('duplicates'))}, unexpected {_fmt(chk.get('unexpected'))}; "
         f"agent scored {_fmt(chk.get('scored'))}.", ""]
    L += _stat_header(title)
    L.append(_stat_row("reading ts → raised alarm at subscriber (ms)", d.get("latency_ms")))
    if d.get("agent_alarm_latency_ms"):
        a = d["agent_alarm_latency_ms"]
        L.append(f"| agent's own alarm latency (/healthcheck, reading received → on the wire, last ≤4096) | {_fmt(a.get('count'))} | – | {_fmt(a.get('avg_ms'))} | {_fmt(a.get('p50_ms'))} | {_fmt(a.get('p95_ms'))} | {_fmt(a.get('p99_ms'))} | {_fmt(a.get('max_ms'))} |")
    if d.get("agent_inference_latency_ms"):
        a = d["agent_inference_latency_ms"]
        L.append(f"| agent's own scoring latency (/healthcheck, ms) | {_fmt(a.get('count'))} | – | {_fmt(a.get('avg_ms'))} | {_fmt(a.get('p50_ms'))} | {_fmt(a.get('p95_ms'))} | {_fmt(a.get('p99_ms'))} | {_fmt(a.get('max_ms'))} |")
    if d.get("per_second_p99_ms"):
        L += ["", "p99 per 5 s window (ms): " + ", ".join(_fmt(x) for x in d["per_second_p99_ms"])]
    if d.get("cpu"):
        L += ["", "CPU (% of one core over the run): " + ", ".join(f"{k} {_fmt(v)}" for k, v in d["cpu"].items())]
    L.append("")
    return L


def _md_latency(p: dict[str, Any]) -> list[str]:
    L = ["## 3. Latency at a fixed rate", "", p.get("method", ""), ""]
    L += _lat_block(p, "latency")
    f = p.get("floor_no_agent")
    if f:
        L += ["Floor of this machine (same publisher, no agent; " + f.get("note", "") + f" Achieved {_fmt(f.get('achieved_per_s'))}/s):", ""]
        L += _stat_header("reading ts → anomalous reading at subscriber (ms)")
        L += [_stat_row("no agent, one broker hop", f.get("latency_ms")), ""]
    return L


def _md_sideload(p: dict[str, Any]) -> list[str]:
    L = ["## 4. Latency under side load", "", p.get("method", ""), ""]
    for case, title in (("baseline", "no side load (same run)"), ("fit", "during fit of 100 series"), ("plot", "during continuous plots")):
        if case in p:
            L += [f"### {title}", ""]
            if p[case].get("side"):
                L += ["Side load: " + ", ".join(f"{k} {_fmt(v)}" for k, v in p[case]["side"].items()), ""]
            L += _lat_block(p[case], title)
    return L


def _md_memory(p: dict[str, Any]) -> list[str]:
    L = ["## 5. Memory (VmRSS of the agent)", "", f"Filled: {p.get('filled_with')}.", "",
         "| state | series | RSS MB | per series kB (above idle) |", "|---|--:|--:|--:|",
         f"| idle (no series, HTTP port on) | 0 | {_fmt(p.get('idle_rss_mb'))} | – |"]
    for st in p.get("stages", []):
        L.append(f"| models loaded, buffers empty | {_fmt(st['series'])} | {_fmt(st['rss_models_loaded_empty_buffers_mb'])} | {_fmt(st['per_series_kb_models_only'])} |")
        L.append(f"| models + {_fmt(st['readings_per_series'])} readings per series | {_fmt(st['series'])} | {_fmt(st['rss_full_buffers_mb'])} | {_fmt(st['per_series_kb'])} |")
    junk = p.get("junk_one_reading_series")
    if junk:
        L.append(f"| one reading each, junk topics, no model | {_fmt(junk['series'])} | {_fmt(junk['rss_after_mb'])} | "
                 f"{_fmt(junk['per_series_bytes'] / 1024)} (above {_fmt(junk['rss_before_mb'])} MB) |")
    L += ["", f"A full ring buffer is {_fmt(p.get('ring_buffer_bytes_per_series'))} bytes per series (float64 values, one "
          "float64 timestamp per block of 16 readings); a series' ring grows to it as its readings arrive.", ""]
    if p.get("notes"):
        L += [f"- {n}" for n in p["notes"]] + [""]
    return L


def _md_startup(p: dict[str, Any]) -> list[str]:
    L = ["## 6. Start-up", "", p.get("method", ""), ""]
    L += _stat_header("models on disk (seconds)")
    for st in p.get("by_models", []):
        L.append(_stat_row(f"{st['models']:,}", st["start_to_ready_s"]))
    L.append("")
    return L


def _md_livestate(p: dict[str, Any]) -> list[str]:
    L = ["## 10. Series live state (series_live.py)", "", p.get("method", ""), "",
         "| series | one pass on the loop | slice median | slice max | written (off the loop) | file | read + from_state "
         "| kept at an eviction (evicted_live.py) |",
         "|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in p.get("by_series", []):
        evict = f"{r['evict_keep_us']} us, {r['evict_kept_bytes']} B per series" if "evict_keep_us" in r else ""
        L.append(f"| {r['series']:,} | {r['one_pass_ms']} ms | {r['slice_median_ms']} ms | {r['slice_max_ms']} ms | {r['write_ms']} ms "
                 f"| {r['file_mb']} MB | {r['read_ms']} ms | {evict} |")
    L.append("")
    return L


def _md_http(p: dict[str, Any]) -> list[str]:
    L = ["## 7. HTTP predict", "", p.get("method", ""), ""]
    L += _stat_header("POST /predict/{id} latency (ms)", ["requests/s", "errors", "agent CPU % of a core"])
    for tool in ("wrk", "httpx"):
        d = p.get(tool)
        if d and "error" not in d:
            L.append(_stat_row(f"{tool}, {p.get('clients')} connections", d.get("latency_ms"),
                               [_fmt(d.get("requests_per_s")), _fmt(d.get("errors")), _fmt(d.get("agent_cpu_percent_of_one_core"))]))
    L += ["", f"Headline uses {p.get('headline_tool')}. wrk (C) leaves the agent most of the CPU; the Python httpx client saturates "
          "first (its rate is the client's limit, see the agent's CPU share), which is why both are shown."]
    if p.get("agent_inference_latency_ms"):
        a = p["agent_inference_latency_ms"]
        L += ["", f"Agent-side scoring of the live stream meanwhile (/healthcheck): p50 {_fmt(a.get('p50_ms'))} ms, p99 {_fmt(a.get('p99_ms'))} ms."]
    L += ["", "Seed service's published figures (different service, different machine, not like-for-like): "
          "0.33 ms average inference, 1,723 predictions/s over HTTP.", ""]
    if p.get("notes"):
        L += [f"- {n}" for n in p["notes"]] + [""]
    return L


def _md_sparkplug(p: dict[str, Any]) -> list[str]:
    L = ["## 8. Sparkplug B ingest (in process)", "", p.get("method", ""), ""]
    L += _stat_header("per message (µs)", ["metrics/msg", "bytes/msg", "readings/s", "µs/metric (median msg)"])
    for key, name in (("json", "JSON Ingest.handle, 1 reading"), ("sparkplug_1", "SparkplugIngest.handle, DDATA 1 metric"),
                      ("sparkplug_10", "SparkplugIngest.handle, DDATA 10 metrics")):
        d = p.get(key) or {}
        L.append(_stat_row(name, d, [_fmt(d.get("metrics_per_message", 1)), _fmt(d.get("message_bytes")), _fmt(d.get("readings_per_s")),
                                     _fmt(d.get("us_per_metric_median"))]))
    for k, d in sorted((p.get("decode") or {}).items(), key=lambda kv: int(kv[0])):
        L.append(_stat_row(f"decode only, DDATA {k} metric(s)", d, [k, _fmt(d.get("message_bytes")), _fmt(d.get("readings_per_s")),
                                                                    _fmt(d.get("us_per_metric_median"))]))
    L += ["", f"Throughput ratio Sparkplug / JSON in this run (wall clock): {_fmt(p.get('ratio_1_metric'))} × with 1 metric per DDATA, "
          f"{_fmt(p.get('ratio_10_metrics'))} × with 10; from the median message: {_fmt(p.get('ratio_median_1_metric'))} × and "
          f"{_fmt(p.get('ratio_median_10_metrics'))} ×.", ""]
    return L


def _md_soak(p: dict[str, Any]) -> list[str]:
    L = ["## 9. Soak (`--only soak`)", "", p.get("method", ""), "",
         f"**{'passed' if p.get('ok') else 'FAILED'}**" + ("" if p.get("ok") else ": " + "; ".join(p.get("failures", []))), "",
         "| figure | value |", "|---|--:|"]
    rss = p.get("rss_mb", {})
    rows = [
        ("spikes sent / acknowledged by the broker", f"{_fmt(p.get('spikes_sent'))} / {_fmt(p.get('spikes_acked_by_broker'))}"),
        ("raised alarms at SCADA (distinct) / missing", f"{_fmt(p.get('alarms_raised_at_scada'))} / {_fmt(p.get('alarms_missing'))}"),
        ("alarm messages at SCADA / duplicates (same alert_id)", f"{_fmt(p.get('alarm_messages_at_scada'))} / {_fmt(p.get('duplicates_by_alert_id'))}"),
        ("spike → SCADA p50 / p99 / max (ms)", " / ".join(_fmt(_get(p, "spike_to_scada_ms", k)) for k in ("median", "p99", "max"))),
        ("RSS after warm-up, first half / second half mean (MB)", f"{_fmt(rss.get('first_half_mean'))} / {_fmt(rss.get('second_half_mean'))}"),
        ("RSS growth, second half vs first", "–" if rss.get("growth") is None else f"{100 * rss['growth']:+.2f} %"),
        ("RSS max (MB)", _fmt(rss.get("max"))),
        ("broker restarts / agent reconnects", f"{_fmt(p.get('broker_restarts'))} / {_fmt(p.get('agent_reconnects'))}"),
        ("messages published (readings + junk) / junk", f"{_fmt(_get(p, 'readings', 'messages_sent'))} / {_fmt(_get(p, 'readings', 'junk_sent'))}"),
        ("readings scored / rejected by the agent", f"{_fmt(_get(p, 'readings', 'scored_by_agent'))} / {_fmt(_get(p, 'readings', 'rejected_by_agent'))}"),
        ("command floods / unsigned commands sent / refused", f"{_fmt(p.get('command_floods'))} / {_fmt(p.get('commands_sent'))} / {_fmt(p.get('commands_refused_by_agent'))}"),
        ("refusals answered (token bucket)", _fmt(p.get("refusals_answered"))),
        ("outbox quarantined / depth at the end", f"{_fmt(p.get('outbox_quarantined'))} / {_fmt(p.get('outbox_depth_at_end'))}"),
        ("event-loop lag p99 / max (ms, last 4,096 probes)", f"{_fmt(_get(p, 'event_loop_lag_ms', 'p99_ms'))} / {_fmt(_get(p, 'event_loop_lag_ms', 'max_ms'))}"),
        ("agent log (bytes)", _fmt(p.get("agent_log_bytes"))),
    ]
    L += [f"| {k} | {v} |" for k, v in rows]
    return L + [""]


def _md_comparisons(P: dict[str, Any]) -> list[str]:
    tp = _get(P, "throughput", "agent", "readings_per_s")
    return ["## Comparisons users make", "",
            "| system | figure | machine | like-for-like? |", "|---|--:|---|---|",
            f"| edge-agent (this run, pre-queued drain) | {_fmt(tp)} readings/s | this 2-core VM, broker and agent on the same cores | – |",
            "| Telegraf / eKuiper (published) | ~12,000 msg/s | Raspberry Pi 3B+ | **no**: different machine, different work per message (they do not score or persist alarms); quoted, not measured here |",
            "| seed service (published) | 1,723 predictions/s, 0.33 ms avg inference | its own | **no**: quoted, not measured here |", ""]


def _md_history(history: list[dict[str, Any]]) -> list[str]:
    L = ["## Before / after (bench/history.json)", ""]
    if not history:
        return L + ["(no runs recorded yet)", ""]
    keys: list[str] = []
    for e in history:
        for k in e.get("figures", {}):
            if k not in keys:
                keys.append(k)
    runs = history[-8:]
    L.append("| figure | " + " | ".join(f"{e['label']} ({e['date'][:16]}, {e['git_commit']}{'+' if e.get('edge_agent_dirty') else ''})" for e in runs) + " |")
    L.append("|---|" + "--:|" * len(runs))
    for k in keys:
        L.append(f"| {k} | " + " | ".join(_fmt(e.get("figures", {}).get(k)) for e in runs) + " |")
    L.append("")
    return L
