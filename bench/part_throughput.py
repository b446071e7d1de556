"""Part 2, throughput: how fast the agent drains pre-queued readings, beside mosquitto_sub.

Both the agent and a mosquitto_sub client hold persistent QoS 1 sessions on plant/+/+/+ and are
offline while N readings (1,000 series, 1 % anomalous) are published. Then mosquitto_sub drains
its queue (``-C N``, a timestamp per message), then the agent drains its own; the agent's rate is
taken from its /metrics ``readings_scored`` counter between the first sample > 0 and the sample
that reaches N. No loss: the counter must reach N, and every injected anomaly must arrive as
exactly one raised alarm (and its clear) at an independent subscriber.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from bench.common import (
    BenchAgent,
    cpu_seconds,
    finish_publishers,
    make_models,
    spawn_loadgen,
    start_broker,
    start_publishers,
    summary,
    track,
    wait_line,
    workdir,
)
from bench.loadgen import expected_anomalies

N_SERIES = 1000


def check_alarms(messages: list[tuple[float, str, str]], expected: set[tuple[str, int]], rounds: int, clear_after: int = 10) -> dict[str, Any]:
    """Sequence check of raised/cleared alarms against the injected anomalies."""
    raised: dict[tuple[str, int], int] = {}
    cleared = 0
    unexpected = 0
    lat = []
    for t_recv, _topic, payload in messages:
        doc = json.loads(payload)
        if doc.get("state") == "raised":
            key = (doc["series"], int(round(doc["value"] - 100.0)))
            if key not in expected:
                unexpected += 1
                continue
            raised[key] = raised.get(key, 0) + 1
            if raised[key] == 1:
                lat.append(t_recv - doc["ts"])
        elif doc.get("state") == "cleared":
            cleared += 1
    exp_cleared = sum(1 for (_s, r) in expected if r + clear_after < rounds)
    return {
        "anomalies_injected": len(expected),
        "raised_received": sum(1 for v in raised.values() if v >= 1),
        "duplicates": sum(v - 1 for v in raised.values()),
        "lost": len(expected) - len(raised),
        "unexpected": unexpected,
        "cleared_received": cleared,
        "cleared_expected": exp_cleared,
        "latencies_s": lat,
    }


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 50 if quick else 150  # the test broker queues at most 200,000 messages per session
    n = N_SERIES * rounds
    broker = start_broker("broker-throughput")
    tmp = workdir("throughput")
    make_models(tmp / "state", N_SERIES)
    agent = BenchAgent(tmp, broker, **{"mqtt.client_id": "bench-tp-agent"})
    out: dict[str, Any] = {"method": __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(), "series": N_SERIES, "readings": n}
    try:
        # 1. persistent sessions: the agent's and mosquitto_sub's, then both offline.
        agent.start()
        agent.wait_ready(60)
        agent.stop()
        raw_cmd = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-c", "-q", "1", "-t", "plant/+/+/+"]
        for cid in ("bench-raw", "bench-raw-quiet"):
            subprocess.run([*raw_cmd, "-i", cid, "-W", "1"], capture_output=True, timeout=10)
        # The SCADA side: collects alarms while the agent drains.
        stopfile, sinkfile = tmp / "sink-stop", tmp / "sink.json"
        sink = spawn_loadgen("sink", broker.host, broker.port, "edge/+/alerts/#", sinkfile, 600, stopfile)
        wait_line(sink, "ready")
        # 2. publish N readings into both queues.
        t0 = time.monotonic()
        pubs, _ = start_publishers(broker, 2, N_SERIES, rounds, 0, qos=1, lead_s=0.2)
        res = finish_publishers(pubs)
        pub_s = time.monotonic() - t0
        out["prepublish"] = {"readings": sum(r["sent"] for r in res), "seconds_incl_start": pub_s,
                             "anomalies": sum(r["anomalies"] for r in res)}
        time.sleep(1.0)
        # 3. raw broker drain: mosquitto_sub -C N, a nanosecond timestamp per message.
        raw_file = tmp / "raw.txt"
        t0 = time.monotonic()
        with open(raw_file, "w") as f:
            p = track(subprocess.Popen([*raw_cmd, "-i", "bench-raw", "-C", str(n), "-F", "%U"], stdout=f, stderr=subprocess.DEVNULL))
            rc = p.wait(180)
        wall = time.monotonic() - t0
        stamps = [float(x) for x in raw_file.read_text().split()]
        raw_s = stamps[-1] - stamps[0] if len(stamps) > 1 else wall
        # The same queue again, printing nothing: process start to exit (includes connect).
        t0 = time.monotonic()
        q = track(subprocess.Popen([*raw_cmd, "-i", "bench-raw-quiet", "-C", str(n)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        rc_q = q.wait(180)
        wall_q = time.monotonic() - t0
        rate_stamped = (len(stamps) - 1) / raw_s if raw_s > 0 else 0.0
        rate_quiet = n / wall_q if rc_q == 0 else 0.0
        out["raw"] = {"messages": n, "received": len(stamps), "rc": rc, "seconds": min(raw_s, wall_q) if rc_q == 0 else raw_s,
                      "stamped_first_to_last_per_s": rate_stamped, "quiet_wall_incl_connect_per_s": rate_quiet,
                      "messages_per_s": max(rate_stamped, rate_quiet)}
        # 4. agent drain.
        agent2 = BenchAgent(tmp, broker, name="agent2", **{"mqtt.client_id": "bench-tp-agent"})
        agent2.start()
        samples: list[tuple[float, float]] = []
        cpu0 = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            tq = time.monotonic()
            try:
                v = agent2.metric("readings_scored")
            except (OSError, KeyError):
                time.sleep(0.02)
                continue
            tnow = time.monotonic()
            if cpu0 is None and v > 0:
                cpu0 = (tnow, cpu_seconds(agent2.pid))
            # The loop that answers /metrics is the one draining: a reply can be late. Taking the
            # request time for the first sample and the reply time for the last one makes the
            # /metrics rate a lower bound.
            samples.append((tq if v == 0 or not samples or samples[-1][1] == 0 else tnow, v))
            if v >= n:
                break
            time.sleep(0.05)
        cpu1 = (time.monotonic(), cpu_seconds(agent2.pid))
        first = next(i for i, (_, v) in enumerate(samples) if v > 0)
        (ta, va), (tb, vb) = samples[first], samples[-1]
        rate = (vb - va) / (tb - ta) if tb > ta else None
        timeline = []
        tcur, vcur = ta, va
        for t, v in samples[first:]:
            if t - tcur >= 1.0:
                timeline.append((v - vcur) / (t - tcur))
                tcur, vcur = t, v
        expected = expected_anomalies(N_SERIES, rounds)
        exp_cleared = sum(1 for (_s, r) in expected if r + 10 < rounds)

        time.sleep(1.0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and agent2.metric("alarms_cleared") < exp_cleared:
            time.sleep(0.2)
        time.sleep(1.0)
        stopfile.touch()
        sink.wait(60)
        msgs = [tuple(m) for m in json.loads(sinkfile.read_text())]
        chk = check_alarms(msgs, expected, rounds)
        chk.pop("latencies_s")
        # Rate from the alarms themselves: a raised alarm names its reading (round r, series s),
        # which was reading number ~ r * 1000 + s of the queue; the slope of that number against
        # the alarm's arrival time is the drain rate, independent of the HTTP port.
        pts = []
        for t_recv, _tp, payload in msgs:
            doc = json.loads(payload)
            if doc.get("state") == "raised":
                r_ = int(round(doc["value"] - 100.0))
                s_ = int(doc["series"][1:].split("/")[0])
                pts.append((t_recv, r_ * N_SERIES + s_))
        alarm_rate = None
        if len(pts) > 10:
            import numpy as np

            a = np.asarray(pts)
            alarm_rate = float(np.polyfit(a[:, 0] - a[0, 0], a[:, 1], 1)[0])
            out["alarm_span_s"] = float(a[:, 0].max() - a[:, 0].min())
        out["agent"] = {
            "readings": n,
            "scored": int(vb),
            "seconds": tb - ta,
            "readings_per_s": alarm_rate or rate,
            "readings_per_s_from_alarms": alarm_rate,
            "readings_per_s_from_metrics_lower_bound": rate,
            "cpu_percent_of_one_core": 100.0 * (cpu1[1] - cpu0[1]) / (cpu1[0] - cpu0[0]) if cpu0 else None,
            "raised_expected": len(expected),
            **chk,
        }
        out["agent_rate_timeline"] = timeline
        best = alarm_rate or rate
        out["ratio"] = best / out["raw"]["messages_per_s"] if best and out["raw"]["messages_per_s"] else None
        out["no_loss"] = int(vb) >= n and chk["lost"] == 0 and chk["duplicates"] == 0 and chk["unexpected"] == 0
        hc = agent2.healthcheck()
        out["agent_healthcheck"] = {k: hc.get(k) for k in ("inference_latency_ms", "alarm_latency_ms", "outbox", "rejected")}
        out["notes"] = [
            "The agent's rate is the slope of reading number (named by each raised alarm) against the alarm's arrival time at a "
            "separate subscriber process (1 % of readings, spread evenly over the queue); start-up is excluded. The /metrics figure "
            "(readings_scored sampled every 50 ms; the draining loop also answers /metrics, so it is taken as a lower bound) is shown beside it.",
            "Raw broker: two mosquitto_sub sessions drain the same queue: one stamping every message (-F %U, first → last), one "
            "printing nothing (process start → exit after -C N, connect included); the faster of the two is the reference. "
            "mosquitto_sub only receives (and acks); it does not decode, score or publish.",
            f"Readings were pre-published by 2 paho processes (QoS 1) in {pub_s:.1f} s.",
        ]
        agent2.stop()
        out["timeline_summary"] = summary(timeline, 1.0, "/s")
        return out
    finally:
        broker.stop()


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1, default=str))
