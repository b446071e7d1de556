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
    start_broker,
    start_publishers,
    summary,
    track,
    wait_for,
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
    rounds = 50 if quick else 100
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
        raw_cmd = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-i", "bench-raw", "-c", "-q", "1", "-t", "plant/+/+/+"]
        subprocess.run([*raw_cmd, "-W", "1"], capture_output=True, timeout=10)
        # The SCADA side: collects alarms while the agent drains.
        from bench.common import _h

        sink = _h.Subscriber(broker, "edge/+/alerts/#", qos=1)
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
            p = track(subprocess.Popen([*raw_cmd, "-C", str(n), "-F", "%U"], stdout=f, stderr=subprocess.DEVNULL))
            rc = p.wait(180)
        wall = time.monotonic() - t0
        stamps = [float(x) for x in raw_file.read_text().split()]
        raw_s = stamps[-1] - stamps[0] if len(stamps) > 1 else wall
        out["raw"] = {"messages": n, "received": len(stamps), "rc": rc, "seconds": raw_s, "seconds_wall_incl_connect": wall,
                      "messages_per_s": (len(stamps) - 1) / raw_s if raw_s > 0 else None}
        # 4. agent drain.
        agent2 = BenchAgent(tmp, broker, name="agent2", **{"mqtt.client_id": "bench-tp-agent"})
        agent2.start()
        samples: list[tuple[float, float]] = []
        cpu0 = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                v = agent2.metric("readings_scored")
            except (OSError, KeyError):
                time.sleep(0.02)
                continue
            tnow = time.monotonic()
            if cpu0 is None and v > 0:
                cpu0 = (tnow, cpu_seconds(agent2.pid))
            samples.append((tnow, v))
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

        def alarms_in() -> bool:
            msgs = sink.messages
            return sum(1 for _t, p, _r in msgs if b'"raised"' in p) >= len(expected) and sum(1 for _t, p, _r in msgs if b'"cleared"' in p) >= exp_cleared

        try:
            wait_for(alarms_in, 60, "all alarms", interval=0.2)
        except TimeoutError:
            pass
        time.sleep(0.5)
        msgs = [(0.0, t, p.decode()) for t, p, _r in list(sink.messages)]
        chk = check_alarms(msgs, expected, rounds)
        chk.pop("latencies_s")
        out["agent"] = {
            "readings": n,
            "scored": int(vb),
            "seconds": tb - ta,
            "readings_per_s": rate,
            "cpu_percent_of_one_core": 100.0 * (cpu1[1] - cpu0[1]) / (cpu1[0] - cpu0[0]) if cpu0 else None,
            "raised_expected": len(expected),
            **chk,
        }
        out["agent_rate_timeline"] = timeline
        out["ratio"] = rate / out["raw"]["messages_per_s"] if rate and out["raw"]["messages_per_s"] else None
        out["no_loss"] = int(vb) >= n and chk["lost"] == 0 and chk["duplicates"] == 0 and chk["unexpected"] == 0
        hc = agent2.healthcheck()
        out["agent_healthcheck"] = {k: hc.get(k) for k in ("inference_latency_ms", "alarm_latency_ms", "outbox", "rejected")}
        out["notes"] = [
            "The agent's rate excludes its start-up (timed from the first /metrics sample with readings_scored > 0, sampled every 50 ms).",
            "mosquitto_sub's rate is first → last message timestamp (-F %U); it only prints, it does not decode, score or publish.",
            f"Readings were pre-published by 2 paho processes (QoS 1) in {pub_s:.1f} s.",
        ]
        sink.close()
        agent2.stop()
        out["timeline_summary"] = summary(timeline, 1.0, "/s")
        return out
    finally:
        broker.stop()


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1, default=str))
