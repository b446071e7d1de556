"""Part 3, latency: reading timestamp -> raised alarm at a subscriber, at a fixed 10,000 readings/s."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import profile
from bench.common import (
    BenchAgent,
    children_cpu_seconds,
    cpu_seconds,
    finish_publishers,
    make_models,
    spawn_loadgen,
    start_broker,
    start_publishers,
    summary,
    system_busy_seconds,
    track,
    wait_line,
    workdir,
)
from bench.loadgen import expected_anomalies
from bench.part_throughput import check_alarms

N_SERIES = 1000
RATE = 10_000
PUBLISHERS = 1

METHOD = (
    "1,000 series with pre-trained statistical models (ModelStore.save before start). One publisher process (a minimal "
    "raw-socket MQTT 3.1.1 client, QoS 1, ≤ 1,000 unacknowledged; paho took a whole core for this rate) sends readings "
    "round-robin over the series at a fixed total rate, each stamped with time.time() as it goes into the send that "
    "carries it; 1 % are anomalies (value 100 + round, so every alarm names its reading). A separate subscriber process "
    "(paho, QoS 1, edge/+/alerts/#) stamps each alarm on arrival; latency = arrival − the alarm's `ts` (the reading's own "
    "timestamp). Sequence check: every injected anomaly must arrive as exactly one raised alarm. A 2 s warm-up at the "
    "same rate precedes each measured run. The whole chain is measured: publisher → mosquitto → agent (decode, score, "
    "alarm JSON, SQLite outbox commit with synchronous=FULL, publish) → mosquitto → subscriber, all on the same 2 cores."
)


def latency_run(broker: Any, agent: BenchAgent, tmp: Path, seconds: float, rate: float = RATE,
                side: Callable[[float, float], Callable[[], dict[str, Any]]] | None = None, tag: str = "run") -> dict[str, Any]:
    """One measured run. ``side(start_at, seconds)`` starts a side load and returns a function that stops it and reports."""
    # warm-up: 20 rounds at the same rate, no subscriber; then let its alarms settle.
    pubs, _ = start_publishers(broker, PUBLISHERS, N_SERIES, 20, rate, qos=1, lead_s=0.2)
    finish_publishers(pubs)
    time.sleep(2.0)
    stopfile = tmp / f"stop-{tag}"
    outfile = tmp / f"sink-{tag}.json"
    sink = spawn_loadgen("sink", broker.host, broker.port, "edge/+/alerts/#", outfile, seconds + 120, stopfile)
    wait_line(sink, "ready")
    rounds = int(rate * seconds / N_SERIES)
    kids0 = children_cpu_seconds()
    pubs, start_at = start_publishers(broker, PUBLISHERS, N_SERIES, rounds, rate, qos=1)
    stop_side = side(start_at, seconds) if side else None
    prof_dir = profile.enabled()
    prof = profile.record(agent.pid, seconds, prof_dir / f"{tag}.txt", idle=True) if prof_dir else None
    scored0 = agent.metric("readings_scored")
    while time.time() < start_at:
        time.sleep(0.01)
    cpu_a0, cpu_b0, t0, sys0 = cpu_seconds(agent.pid), cpu_seconds(broker.proc.pid), time.monotonic(), system_busy_seconds()
    res = finish_publishers(pubs, timeout=seconds + 120)
    cpu_a1, cpu_b1, t1, sys1 = cpu_seconds(agent.pid), cpu_seconds(broker.proc.pid), time.monotonic(), system_busy_seconds()
    kids1 = children_cpu_seconds()  # publishers (reaped) + the bench itself; the sink is added below
    side_report = stop_side() if stop_side else None
    if prof is not None:
        prof.wait(30)
    hc = agent.healthcheck()
    expected = expected_anomalies(N_SERIES, rounds)
    # wait (bounded) for the last alarms, then stop the sink.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and agent.metric("readings_scored") < scored0 + N_SERIES * rounds:
        time.sleep(0.1)
    time.sleep(1.0)
    stopfile.touch()
    sink.wait(30)
    sink_cpu = children_cpu_seconds() - kids1
    msgs = json.loads(outfile.read_text())
    chk = check_alarms([tuple(m) for m in msgs], expected, rounds)
    lat = np.asarray(chk.pop("latencies_s"))
    sent = sum(r["sent"] for r in res)
    span = max(r["seconds_sent"] for r in res)
    out = {
        "publish": {"readings": sent, "seconds": span, "achieved_per_s": sent / span, "target_per_s": rate, "processes": PUBLISHERS,
                    "qos": 1, "max_behind_schedule_s": max(r["max_behind_s"] for r in res)},
        "check": {**chk, "scored": int(agent.metric("readings_scored") - scored0)},
        "latency_ms": summary(lat, 1e3, "ms"),
        "cpu": {"agent %": 100 * (cpu_a1 - cpu_a0) / (t1 - t0), "mosquitto %": 100 * (cpu_b1 - cpu_b0) / (t1 - t0),
                "publishers+bench %": 100 * (kids1 - kids0) / (t1 - t0),
                "whole machine busy % (of 200)": 100 * (sys1 - sys0) / (t1 - t0),
                # what else ran on the 2 cores meanwhile (other users' jobs): the noise of this run
                "other processes % (approx.)": max(0.0, 100 * ((sys1 - sys0) - (cpu_a1 - cpu_a0) - (cpu_b1 - cpu_b0) - (kids1 - kids0) - sink_cpu * (t1 - t0) / max(t1 - t0, seconds + 3)) / (t1 - t0))},
        "agent_alarm_latency_ms": hc.get("alarm_latency_ms"),
        "agent_inference_latency_ms": hc.get("inference_latency_ms"),
    }
    # p99 per 5 s window of reading time
    ts = [json.loads(p)["ts"] for _t, _tp, p in msgs if '"raised"' in p]
    if len(ts) == len(lat) and len(ts):
        ts_a = np.asarray(ts)
        w0 = ts_a.min()
        out["per_second_p99_ms"] = [float(np.percentile(lat[(ts_a >= w0 + i) & (ts_a < w0 + i + 5)], 99) * 1e3)
                                    for i in range(0, int(seconds), 5) if ((ts_a >= w0 + i) & (ts_a < w0 + i + 5)).any()]
    if side_report:
        out["side"] = side_report
    return out


def floor_run(broker: Any, tmp: Path, seconds: float, rate: float = RATE) -> dict[str, Any]:
    """The same publisher, no agent: mosquitto_sub (C, so the subscriber is not the bottleneck
    at 10k/s) stamps every reading on arrival; reading ts -> arrival of the anomalous ones.
    The environment's share of the latency: one broker hop where the agent path has two."""
    outfile = tmp / "sink-floor.txt"
    with open(outfile, "w") as f:
        sub = track(subprocess.Popen(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", "plant/+/+/+",
                                      "-F", "%U %p"], stdout=f, stderr=subprocess.DEVNULL))
        time.sleep(0.5)  # subscribed (loopback)
        rounds = int(rate * seconds / N_SERIES)
        pubs, _ = start_publishers(broker, PUBLISHERS, N_SERIES, rounds, rate, qos=1)
        res = finish_publishers(pubs, timeout=seconds + 120)
        time.sleep(1.0)
        sub.terminate()
        sub.wait(10)
    lat = []
    n = 0
    for line in outfile.read_text().splitlines():
        stamp, _, payload = line.partition(" ")
        n += 1
        try:
            doc = json.loads(payload)
        except ValueError:
            continue
        if doc["value"] >= 100.0:
            lat.append(float(stamp) - doc["ts"])
    sent = sum(r["sent"] for r in res)
    return {"received": n, "sent": sent, "achieved_per_s": sent / max(r["seconds_sent"] for r in res),
            "latency_ms": summary(lat, 1e3, "ms"),
            "note": "publisher -> mosquitto -> mosquitto_sub (receives all 10k readings/s), no agent: one broker hop; "
                    "the agent path has two (reading in, alarm out)."}


def start_agent(tmp: Path, broker: Any, **overrides: Any) -> BenchAgent:
    make_models(tmp / "state", N_SERIES)
    agent = BenchAgent(tmp, broker, **{"mqtt.client_id": f"bench-{tmp.name}", **overrides})
    agent.start()
    agent.wait_ready(60)
    return agent


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 10 if quick else 25
    broker = start_broker("broker-latency")
    tmp = workdir("latency")
    floor = floor_run(broker, tmp, min(seconds, 10))
    agent = start_agent(tmp, broker)
    try:
        out = latency_run(broker, agent, tmp, seconds)
        out["method"] = METHOD
        out["seconds"] = seconds
        out["floor_no_agent"] = floor
        return out
    finally:
        agent.stop()
        broker.stop()


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1, default=str))
