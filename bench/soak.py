"""Soak: an hour of 2,000 readings/s with hostile traffic and broker restarts (issue 15).

    make bench BENCH_ARGS="--only soak"                 # 60 minutes (not in the default run)
    make bench BENCH_ARGS="--only soak --minutes 5"     # the same, shorter
    python -m bench.soak --minutes 5                    # alone: prints the figures as JSON

What runs against one real mosquitto and one real agent (``edge-agent run``, HTTP on):

- readings: ``SERIES`` series at 2,000 readings/s in all, QoS 0, from a child process with a
  raw-socket publisher that reconnects after each broker restart;
- spikes: every ``SPIKE_EVERY_S`` one series (round robin) gets a reading far outside its
  band, QoS 1 from a paho client; a spike counts as *sent* only once the broker
  acknowledged it. Each spike has its own value (1000 + its number), so its alarm names it;
- junk: ``JUNK_PER_S`` messages/s of bad payloads on random reading topics (bad JSON,
  strings, NaN, empty) -- rejected at ingest, no series created;
- command floods: every ``FLOOD_EVERY_S`` a burst of ``FLOOD_SIZE`` unsigned commands and
  a few with 60,000-character command names;
- the broker restarted (SIGTERM, which saves its state, then started again on the same port)
  every ``RESTART_EVERY_S`` (every 2/5 of the run in runs shorter than 25 minutes);
- SCADA: an independent paho subscriber with a persistent session (clean session off,
  QoS 1) on the alarm topics.

It asserts (``ok``/``failures`` in the result): **no alarm lost** -- every acknowledged spike
has its raised alarm at SCADA, deduplicated on ``alert_id`` -- and **RSS flat within 10 %**
-- the mean RSS of the second half after warm-up against the first half (warm-up: the first
sixth of the run, at least a minute). It also reports spike-to-SCADA latency, duplicates,
the agent's reconnects, rejected readings, refused commands, quarantined rows, event-loop lag
and log size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BenchAgent, http_get, start_broker, summary, track, workdir
from bench.loadgen import _varint

SERIES = 200
RATE = 2000.0  # readings/s, all series together
SPIKE_EVERY_S = 2.0
JUNK_PER_S = 100
FLOOD_EVERY_S = 60.0
FLOOD_SIZE = 5000
RESTART_EVERY_S = 600.0
RSS_EVERY_S = 5.0
RSS_TOLERANCE = 0.10


def topic(s: int) -> str:
    return f"plant/soak/m{s:03d}/temp"


def series_id(s: int) -> str:
    return f"m{s:03d}/temp"


# ---- child process: the reading publisher ----------------------------------------------------
def _connect(host: str, port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack("!H", len(cid)) + cid  # clean session, no keepalive
    sock.sendall(b"\x10" + _varint(len(body)) + body)
    if sock.recv(4)[:1] != b"\x20":
        raise ConnectionError("no CONNACK")
    sock.settimeout(None)
    return sock


def _publish0(topic_: str, payload: bytes) -> bytes:
    t = topic_.encode()
    body = struct.pack("!H", len(t)) + t + payload
    return b"\x30" + _varint(len(body)) + body


def readings(host: str, port: int, stopfile: str, outfile: str) -> None:
    """Normal readings (uniform 19..21) for every series at RATE/s in all, plus JUNK_PER_S junk
    messages; reconnects whenever the broker goes away. Writes counts to ``outfile``."""
    rng = random.Random(1)
    heads = [topic(s) for s in range(SERIES)]
    sent = junk = reconnects = 0
    sock: socket.socket | None = None
    t0 = time.perf_counter()
    k = 0
    junk_payloads = [b"{not json", b'{"value": "hot"}', b'{"value": NaN}', b"", b'{"value": null}', b"[1,2]"]
    while not os.path.exists(stopfile):
        if sock is None:
            try:
                sock = _connect(host, port, f"soak-readings-{os.getpid()}")
            except OSError:
                time.sleep(0.2)
                continue
        due = int((time.perf_counter() - t0) * RATE)
        if due <= k:
            time.sleep(0.002)
            continue
        out = []
        now = time.time()
        while k < due:
            s = k % SERIES
            out.append(_publish0(heads[s], b'{"value":%.3f,"ts":%r}' % (rng.uniform(19.0, 21.0), now)))
            k += 1
            if k % int(RATE / JUNK_PER_S) == 0:
                out.append(_publish0(f"plant/junk{rng.randrange(10**6)}/x{rng.randrange(100)}/y", rng.choice(junk_payloads)))
                junk += 1
        try:
            sock.sendall(b"".join(out))
            sent += len(out)
        except OSError:
            sock.close()
            sock = None
            reconnects += 1
            k = int((time.perf_counter() - t0) * RATE)  # readings due while down are skipped, not queued
    if sock is not None:
        sock.close()
    Path(outfile).write_text(json.dumps({"messages_sent": sent, "junk_sent": junk, "reconnects": reconnects}))


# ---- the soak itself ---------------------------------------------------------------------------
class Scada:
    """SCADA's side: persistent session, QoS 1, every alarm with its receive time."""

    def __init__(self, host: str, port: int, gateway_id: str) -> None:
        import paho.mqtt.client as paho

        self.got: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="soak-scada", clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(f"edge/{gateway_id}/alerts/#", qos=1)
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.2, 2.0)
        self.c.connect(host, port)
        self.c.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            doc = {"unparsable": msg.payload[:100].decode("utf-8", "replace")}
        with self.lock:
            self.got.append((time.time(), doc))

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Spiker:
    """One spike every SPIKE_EVERY_S, round robin over the series, QoS 1."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as paho

        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="soak-spiker", clean_session=False)
        self.c.reconnect_delay_set(0.2, 2.0)
        self.c.max_queued_messages_set(0)
        self.c.connect(host, port)
        self.c.loop_start()
        self.sent: list[tuple[int, float, float, Any]] = []  # (number, value, publish time, info)
        self.n = 0

    def spike(self) -> None:
        s = self.n % SERIES
        value = 1000.0 + self.n
        t = time.time()
        # Stamped 0.5 s ahead: a normal reading of the same series stamped a moment later but
        # delivered first would otherwise make the spike "stale" (older than the series' newest).
        info = self.c.publish(topic(s), json.dumps({"value": value, "ts": t + 0.5}), qos=1)
        self.sent.append((s, value, t, info))
        self.n += 1

    def acked(self) -> list[tuple[int, float, float]]:
        return [(s, v, t) for s, v, t, info in self.sent if info.is_published()]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _flood(host: str, port: int, gateway_id: str) -> int:
    """FLOOD_SIZE unsigned commands and 10 with a 60,000-character name, QoS 0."""
    try:
        sock = _connect(host, port, f"soak-flood-{os.getpid()}")
    except OSError:
        return 0
    try:
        cmd = _publish0(f"edge/{gateway_id}/cmd/fit", b'{"cmd": "fit", "args": {}}')
        long = _publish0(f"edge/{gateway_id}/cmd/" + "B" * 60_000, b"{}")
        sock.sendall(cmd * FLOOD_SIZE + long * 10)
        sock.sendall(b"\xe0\x00")
    except OSError:
        return 0
    finally:
        sock.close()
    return FLOOD_SIZE + 10


def run(quick: bool = False, minutes: float | None = None) -> dict[str, Any]:
    minutes = minutes if minutes is not None else (5.0 if quick else 60.0)
    duration = minutes * 60.0
    warmup = max(60.0, duration / 6)
    restart_every = min(RESTART_EVERY_S, duration / 2.5)  # a short run still sees restarts
    broker = start_broker("broker-soak")
    tmp = workdir("soak")
    agent = BenchAgent(tmp, broker, **{"series.buffer_size": 1024, "log.level": "INFO"})
    agent.start()
    agent.wait_ready(60)
    gw = agent.config["gateway_id"]
    stopfile, countfile = tmp / "stop", tmp / "readings.json"
    pub = spawn_loadgen_soak(broker.host, broker.port, stopfile, countfile)
    scada = Scada(broker.host, broker.port, gw)
    spiker = Spiker(broker.host, broker.port)
    rss: list[tuple[float, int]] = []
    restarts = floods = flood_msgs = 0
    t0 = time.monotonic()
    next_spike, next_flood, next_restart, next_rss = t0 + 30.0, t0 + FLOOD_EVERY_S / 2, t0 + restart_every, t0
    last_report = t0
    try:
        while (now := time.monotonic()) - t0 < duration:
            if agent.proc is not None and agent.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {agent.proc.returncode}:\n{agent.log()[-3000:]}")
            if now >= next_rss:
                rss.append((now - t0, agent.rss()))
                next_rss += RSS_EVERY_S
            if now >= next_spike:  # first spike after the series have trained (100 readings at 10/s)
                spiker.spike()
                next_spike += SPIKE_EVERY_S
            if now >= next_flood:
                flood_msgs += _flood(broker.host, broker.port, gw)
                floods += 1
                next_flood += FLOOD_EVERY_S
            if now >= next_restart and duration - (now - t0) > 60:
                broker.stop()  # SIGTERM: mosquitto saves its state
                time.sleep(1.0)
                broker.start()
                restarts += 1
                next_restart += restart_every
            if now - last_report >= 60:
                last_report = now
                print(f"   soak: {(now - t0) / 60:.0f}/{minutes:g} min, RSS {rss[-1][1] / 1024:.1f} MB, "
                      f"{len(spiker.sent)} spikes, {len(scada.got)} alarm messages, {restarts} broker restarts", file=sys.stderr, flush=True)
            time.sleep(0.02)
        # Let the last spikes and any backlog arrive.
        time.sleep(10.0)
        health = agent.healthcheck()
        _, metrics_text = http_get(agent.url("/metrics"), timeout=10)
    finally:
        stopfile.write_text("stop")
        try:
            pub.wait(30)
        except subprocess.TimeoutExpired:
            pub.kill()
        spiker.close()
        scada.close()
    counts = json.loads(countfile.read_text()) if countfile.exists() else {}
    res = _result(minutes, warmup, rss, spiker, scada, health, metrics_text.decode(), counts, restarts, floods, flood_msgs, agent)
    res["method"] = res["method"].replace(f"every {RESTART_EVERY_S / 60:g} min", f"every {restart_every / 60:g} min")
    return res


def spawn_loadgen_soak(host: str, port: int, stopfile: Path, countfile: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "bench.soak", "readings", host, str(port), str(stopfile), str(countfile)],
                         cwd=Path(__file__).resolve().parents[1])
    return track(p)


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _result(minutes: float, warmup: float, rss: list[tuple[float, int]], spiker: Spiker, scada: Scada, health: dict[str, Any],
            metrics_text: str, counts: dict[str, Any], restarts: int, floods: int, flood_msgs: int, agent: BenchAgent) -> dict[str, Any]:
    acked = spiker.acked()
    with scada.lock:
        got = list(scada.got)
    raised: dict[tuple[str, float], tuple[float, str]] = {}
    duplicates = 0
    seen_ids: set[str] = set()
    for at, doc in got:
        aid = doc.get("alert_id")
        if aid in seen_ids:
            duplicates += 1
            continue
        seen_ids.add(aid)
        if doc.get("state") == "raised":
            raised[(doc.get("series"), doc.get("value"))] = (at, aid)
    missing = [(series_id(s), v) for s, v, _ in acked if (series_id(s), v) not in raised]
    latencies = [raised[(series_id(s), v)][0] - t for s, v, t in acked if (series_id(s), v) in raised]
    after = [(t, kb) for t, kb in rss if t >= warmup]
    half = len(after) // 2
    first = float(np.mean([kb for _, kb in after[:half]])) / 1024 if half else None
    second = float(np.mean([kb for _, kb in after[half:]])) / 1024 if half else None
    growth = (second - first) / first if first else None
    failures = []
    if missing:
        failures.append(f"{len(missing)} of {len(acked)} acknowledged spikes have no alarm at SCADA, e.g. {missing[:5]}")
    if growth is None or abs(growth) > RSS_TOLERANCE:
        failures.append(f"RSS second half vs first half after warm-up: {growth if growth is None else f'{growth:+.1%}'} (limit ±{RSS_TOLERANCE:.0%})")
    return {
        "method": (f"{minutes:g} min: {SERIES} series at {RATE:,.0f} readings/s (QoS 0, raw socket), a QoS 1 spike every {SPIKE_EVERY_S:g} s, "
                   f"{JUNK_PER_S} junk messages/s, {FLOOD_SIZE:,} unsigned commands + 10 with 60,000-character names every "
                   f"{FLOOD_EVERY_S:g} s, the broker restarted (SIGTERM, start) every {RESTART_EVERY_S / 60:g} min; SCADA a persistent "
                   f"QoS 1 paho session. RSS sampled every {RSS_EVERY_S:g} s; warm-up {warmup / 60:.1f} min."),
        "minutes": minutes,
        "ok": not failures,
        "failures": failures,
        "spikes_sent": len(spiker.sent),
        "spikes_acked_by_broker": len(acked),
        "alarms_raised_at_scada": len(raised),
        "alarms_missing": len(missing),
        "alarm_messages_at_scada": len(got),
        "duplicates_by_alert_id": duplicates,
        "spike_to_scada_ms": summary(latencies, 1e3, "ms"),
        "rss_mb": {"first_half_mean": first, "second_half_mean": second, "growth": growth,
                   "max": max(kb for _, kb in rss) / 1024 if rss else None, "samples": len(rss),
                   "series_mb": [(round(t), round(kb / 1024, 1)) for t, kb in rss[:: max(1, len(rss) // 60)]]},
        "broker_restarts": restarts,
        "agent_reconnects": _metric(metrics_text, "edge_agent_broker_reconnects_total"),
        "readings": {**counts, "scored_by_agent": _metric(metrics_text, "edge_agent_readings_scored_total"),
                     "rejected_by_agent": _metric(metrics_text, "edge_agent_readings_rejected_total")},
        "command_floods": floods,
        "commands_sent": flood_msgs,
        "commands_refused_by_agent": _metric(metrics_text, "edge_agent_commands_refused_total"),
        "refusals_answered": _metric(metrics_text, "edge_agent_commands_refused_total") - _metric(metrics_text, "edge_agent_command_refusals_unanswered_total"),
        "outbox_quarantined": _metric(metrics_text, "edge_agent_outbox_quarantined_total"),
        "outbox_depth_at_end": health.get("outbox", {}).get("depth"),
        "event_loop_lag_ms": health.get("event_loop_lag_ms"),
        "health_at_end": {"status": health.get("status"), "problems": health.get("problems")},
        "agent_log_bytes": len(agent.log().encode()),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "readings":
        host, port, stopfile, outfile = argv[1:5]
        readings(host, int(port), stopfile, outfile)
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    args = ap.parse_args(argv)
    res = run(minutes=args.minutes)
    print(json.dumps(res, indent=1, default=float))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
