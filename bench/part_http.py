"""Part 7, HTTP predict: POST /predict/{id} at 100 concurrent keep-alive clients (httpx, asyncio)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from typing import Any

from bench.common import cpu_seconds, spawn_loadgen, start_broker, summary, workdir
from bench.part_latency import start_agent

CLIENTS = 100

WRK_LUA = r"""
math.randomseed(42)
request = function()
  local s = math.random(0, 999)
  return wrk.format("POST", string.format("/predict/m%03d/temp", s), {["Content-Type"] = "application/json"},
                    string.format('{"value": %.3f}', 19 + 2 * math.random()))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('JSON {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"min":%d,"avg":%f,"max":%d,"median":%d,"p95":%d,"p99":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status, latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def run_wrk(url: str, seconds: float, tmp: Any) -> dict[str, Any] | None:
    exe = shutil.which("wrk")
    if exe is None:
        return None
    script = tmp / "predict.lua"
    script.write_text(WRK_LUA)
    # warm-up, then the measured run
    subprocess.run([exe, "-t1", f"-c{CLIENTS}", "-d2s", "-s", str(script), url], capture_output=True, timeout=60)
    r = subprocess.run([exe, "-t1", f"-c{CLIENTS}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", str(script), url],
                       capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("JSON ")), None)
    if line is None:
        return {"error": r.stdout[-500:] + r.stderr[-500:]}
    d = json.loads(line[5:])
    secs = d["duration_us"] / 1e6
    return {
        "tool": "wrk 1 thread, 100 connections (C, ~negligible client CPU per request compared to Python)",
        "requests": d["requests"], "seconds": secs, "requests_per_s": d["requests"] / secs, "errors": d["errors"], "non2xx": d["non2xx"],
        "latency_ms": {"n": d["requests"], "unit": "ms", **{k: d[k] / 1e3 for k in ("min", "avg", "median", "p95", "p99", "max")}},
    }


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 8 if quick else 15
    broker = start_broker("broker-http")
    tmp = workdir("http")
    agent = start_agent(tmp, broker)
    try:
        c0, t0 = cpu_seconds(agent.pid), time.monotonic()
        wrk = run_wrk(agent.url(""), seconds, tmp)
        wrk_cpu = 100 * (cpu_seconds(agent.pid) - c0) / (time.monotonic() - t0)
        out_file = tmp / "http.json"
        warmup = 2.0
        p = spawn_loadgen("http", agent.url(""), 1000, CLIENTS, seconds, warmup, out_file)
        time.sleep(warmup)
        c0, t0 = cpu_seconds(agent.pid), time.monotonic()
        p.wait(seconds + 120)
        c1, t1 = cpu_seconds(agent.pid), time.monotonic()
        d = json.loads(out_file.read_text())
        lat = summary(d["latencies_s"], 1e3, "ms")
        hc = agent.healthcheck()
        res = {
            "method": f"{CLIENTS} concurrent httpx.AsyncClient tasks (one process, keep-alive, HTTP/1.1) POST /predict/m{{NNN}}/temp "
                      f'with {{"value": x}} for random series of 1,000 trained statistical models, {seconds} s after a {warmup:.0f} s warm-up. '
                      "The client runs on the same 2 cores as the agent (and its Python client costs about as much CPU per request "
                      "as the server), so this is a lower bound of the server's capacity. No MQTT load meanwhile.",
            "clients": CLIENTS,
            "seconds": seconds,
            "httpx": {"requests": lat.get("n", 0), "requests_per_s": lat.get("n", 0) / seconds, "errors": d["errors"],
                      "status_codes": d.get("codes"), "latency_ms": lat, "agent_cpu_percent_of_one_core": 100 * (c1 - c0) / (t1 - t0)},
            "wrk": wrk,
            "agent_inference_latency_ms": hc.get("inference_latency_ms"),
            "notes": ["Each predict deep-copies the model (the handler does, so streaming detectors do not learn from API calls), "
                      "validates with pydantic and serialises a response model: that, not scoring (< 1 µs), is the per-request cost."],
        }
        best = wrk if wrk and "error" not in wrk else res["httpx"]
        res["requests_per_s"] = best["requests_per_s"]
        res["latency_ms"] = best["latency_ms"]
        res["errors"] = best["errors"]
        res["headline_tool"] = "wrk" if best is wrk else "httpx"
        if wrk and "error" not in wrk:
            wrk["agent_cpu_percent_of_one_core"] = wrk_cpu
        return res
    finally:
        agent.stop()
        broker.stop()


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1, default=str))
