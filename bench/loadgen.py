"""Load-generating child processes (so that they do not share the bench's GIL):

    python -m bench.loadgen pub  HOST PORT WORKER NWORKERS NSERIES ROUNDS RATE START_AT QOS
    python -m bench.loadgen sink HOST PORT TOPIC OUTFILE MAX_SECONDS STOPFILE
    python -m bench.loadgen plot URL_BASE NSERIES SECONDS OUTFILE
    python -m bench.loadgen http URL_BASE NSERIES CLIENTS SECONDS WARMUP OUTFILE

Readings: series s is topic plant/l1/m{s:03d}/temp; reading of round r for series s is anomalous
when (r + s) % 100 == 0 (1 %), with value 100 + r so an alarm names its reading; normal values
are uniform 19..21 (never anomalous for the statistical models the bench trains). ``ts`` is the
publisher's time.time() as the reading is put into the send that carries it (all readings due
at that moment go out in one send).
"""

from __future__ import annotations

import json
import os
import random
import select
import socket
import struct
import sys
import time
from typing import Any


def topic(s: int) -> str:
    return f"plant/l1/m{s:03d}/temp" if s < 1000 else f"plant/l1/m{s}/temp"


def is_anomaly(r: int, s: int) -> bool:
    return (r + s) % 100 == 0


def expected_anomalies(n_series: int, rounds: int) -> set[tuple[str, int]]:
    out = set()
    for s in range(n_series):
        sid = topic(s).split("/")[2] + "/temp"
        for r in range(rounds):
            if is_anomaly(r, s):
                out.add((sid, r))
    return out


class RawMqtt:
    """A minimal MQTT 3.1.1 publisher on a plain socket: the PLC side of the bench.

    paho spends ~30 % of a core per 3,000 msg/s (three paho publishers took a whole core
    of this 2-core machine at 10,000/s and inflated every latency measured beside them).
    This one builds each PUBLISH itself and writes every due reading with one send:
    about a tenth of that. QoS 1 acks are counted, not matched: mosquitto sends a 3.1.1
    client nothing else (keepalive is off), and acks come in order."""

    def __init__(self, host: str, port: int, client_id: str, window: int = 1000) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack("!H", len(cid)) + cid  # clean session, no keepalive
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        connack = self.sock.recv(4)
        if len(connack) != 4 or connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"broker refused the bench publisher: {connack!r}")
        self.window = window
        self.sent_qos1 = 0
        self.rx_bytes = 0
        self.mid = 0

    @property
    def unacked(self) -> int:
        return self.sent_qos1 - self.rx_bytes // 4

    def packet(self, topic_header: bytes, payload: bytes, qos: int) -> bytes:
        if qos:
            self.mid = self.mid % 65535 + 1
            self.sent_qos1 += 1
            body = topic_header + struct.pack("!H", self.mid) + payload
            return b"\x32" + _varint(len(body)) + body
        body = topic_header + payload
        return b"\x30" + _varint(len(body)) + body

    def read_acks(self, wait: bool) -> None:
        if wait:
            select.select([self.sock], [], [], 5.0)
        while True:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if not data:
                raise RuntimeError("broker closed the bench publisher's connection")
            self.rx_bytes += len(data)

    def close(self) -> None:
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pub(host: str, port: int, worker: int, nworkers: int, nseries: int, rounds: int, rate: float, start_at: float, qos: int) -> None:
    """Publish rounds x (this worker's series) readings, paced at ``rate``/s (0 = as fast as the
    window allows). Each reading is stamped with time.time() as it is put on the wire."""
    c = RawMqtt(host, port, f"bench-pub-{os.getpid()}")
    mine = [s for s in range(nseries) if s % nworkers == worker]
    headers = [struct.pack("!H", len(t)) + t for t in (topic(s).encode() for s in mine)]
    rng = random.Random(worker)
    print("ready", flush=True)
    while time.time() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - time.time())))
    total = rounds * len(mine)
    now = time.perf_counter
    wall = time.time
    t0 = now()
    wall0 = wall()
    k = 0
    anomalies = 0
    max_behind = 0.0
    while k < total:
        if rate > 0:
            due_n = min(total, int((now() - t0) * rate) + 1)
            if due_n <= k:
                time.sleep(max(0.0, t0 + k / rate - now()))
                continue
            behind = now() - (t0 + k / rate)
            if behind > max_behind:
                max_behind = behind
        else:
            due_n = min(total, k + 100)
        out = []
        while k < due_n:
            r, j = divmod(k, len(mine))
            s = mine[j]
            if (r + s) % 100 == 0:
                v = 100.0 + r
                anomalies += 1
            else:
                v = round(rng.uniform(19.0, 21.0), 3)
            out.append(c.packet(headers[j], b'{"value":%r,"ts":%r}' % (v, wall()), qos))
            k += 1
        c.sock.sendall(b"".join(out))
        c.read_acks(wait=False)
        while qos and c.unacked >= c.window:
            c.read_acks(wait=True)
    t_sent = now() - t0
    deadline = now() + 120
    while qos and c.unacked > 0 and now() < deadline:
        c.read_acks(wait=True)
    t_acked = now() - t0
    c.close()
    print(json.dumps({"worker": worker, "sent": k, "anomalies": anomalies, "seconds_sent": t_sent, "seconds_acked": t_acked,
                      "wall_start": wall0, "max_behind_s": max_behind, "unacked_at_end": c.unacked}), flush=True)


def sink(host: str, port: int, topic_filter: str, outfile: str, max_seconds: float, stopfile: str) -> None:
    """Collect (receive time, topic, payload) of every message on ``topic_filter`` until ``stopfile`` exists."""
    import paho.mqtt.client as paho

    got: list[tuple[float, str, str]] = []
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-sink-{os.getpid()}", clean_session=True)

    def on_message(cl: Any, ud: Any, msg: Any) -> None:
        got.append((time.time(), msg.topic, msg.payload.decode()))

    subscribed = []
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(topic_filter, qos=1)
    c.on_subscribe = lambda *a: subscribed.append(1)
    c.connect(host, port)
    c.loop_start()
    end = time.time() + 10
    while not subscribed and time.time() < end:
        time.sleep(0.01)
    print("ready", flush=True)
    end = time.time() + max_seconds
    while time.time() < end and not os.path.exists(stopfile):
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    with open(outfile, "w") as f:
        json.dump(got, f)


def plot(url_base: str, nseries: int, seconds: float, outfile: str) -> None:
    """GET /plot/{id}.png in a loop (random series, one request at a time)."""
    import urllib.request

    lat, errors = [], 0
    rng = random.Random(3)
    end = time.time() + seconds
    while time.time() < end:
        s = rng.randrange(nseries)
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(f"{url_base}/plot/m{s:03d}/temp.png", timeout=30) as r:
                r.read()
            lat.append(time.perf_counter() - t0)
        except Exception:
            errors += 1
            time.sleep(0.05)
    with open(outfile, "w") as f:
        json.dump({"latencies_s": lat, "errors": errors, "seconds": seconds}, f)


def http(url_base: str, nseries: int, clients: int, seconds: float, warmup: float, outfile: str) -> None:
    """``clients`` concurrent keep-alive clients POSTing /predict/{id} for ``seconds`` after ``warmup``."""
    import asyncio

    import httpx

    async def main() -> dict[str, Any]:
        lat: list[float] = []
        errors = 0
        codes: dict[int, int] = {}
        t_start = time.perf_counter() + warmup
        t_end = t_start + seconds
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url_base, limits=limits, timeout=30) as client:
            async def worker(w: int) -> None:
                nonlocal errors
                rng = random.Random(w)
                while True:
                    now = time.perf_counter()
                    if now >= t_end:
                        return
                    s = rng.randrange(nseries)
                    t0 = time.perf_counter()
                    try:
                        r = await client.post(f"/predict/m{s:03d}/temp", json={"value": round(rng.uniform(19, 21), 3)})
                        ok = r.status_code == 200
                        codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    except Exception:
                        ok = False
                    t1 = time.perf_counter()
                    if t0 >= t_start and t1 <= t_end:
                        if ok:
                            lat.append(t1 - t0)
                        else:
                            errors += 1

            await asyncio.gather(*(worker(w) for w in range(clients)))
        return {"latencies_s": lat, "errors": errors, "seconds": seconds, "codes": codes}

    res = asyncio.run(main())
    with open(outfile, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    mode, *a = sys.argv[1:]
    if mode == "pub":
        pub(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]), int(a[5]), float(a[6]), float(a[7]), int(a[8]))
    elif mode == "sink":
        sink(a[0], int(a[1]), a[2], a[3], float(a[4]), a[5])
    elif mode == "plot":
        plot(a[0], int(a[1]), float(a[2]), a[3])
    elif mode == "http":
        http(a[0], int(a[1]), int(a[2]), float(a[3]), float(a[4]), a[5])
    else:
        raise SystemExit(f"unknown mode {mode}")
