"""CPU the event loop spends per arriving packet, when packets arrive one per read.

At 10,000 readings/s the broker mostly forwards each reading in its own TCP segment, so the
agent wakes for nearly every one: the loop's own wake-up cost, not scoring (a few µs), is the
bulk of the agent's CPU per reading. Measured here with nothing else in the way: a forked
sender writes one small MQTT PUBLISH per ``send()`` at a fixed rate into a socketpair; the
receiving loop hands the bytes to a protocol; the figure is the receiving thread's CPU time
(``time.thread_time``) divided by the packets received. Protocols: a bare
``asyncio.Protocol`` that only counts (the floor of the loop), gmqtt's own reader
(StreamReader plus a reader task), and ``edge_agent.mqtt_framing.FramingProtocol``.

Run alone: ``python -m bench.receive_path`` prints the table as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

N_PACKETS = 30_000
RATE = 10_000.0
LOOPS = ("asyncio", "uvloop")
PROTOCOLS = ("bare", "gmqtt_reader", "edge_framing")

_TOPIC = b"plant/line1/m001/temp"
_PAYLOAD = b'{"value": 20.5, "ts": 1700000000.0}'
_BODY = len(_TOPIC).to_bytes(2, "big") + _TOPIC + _PAYLOAD
PACKET = bytes([0x30, len(_BODY)]) + _BODY  # QoS 0 PUBLISH; the body is < 128 bytes


def _send(sock: socket.socket, n: int, rate: float) -> None:
    t = time.perf_counter()
    for _ in range(n):
        sock.send(PACKET)
        t += 1.0 / rate
        d = t - time.perf_counter()
        if d > 0:
            time.sleep(d)


class _Sink:
    """Stands in for gmqtt's connection: counts packets, resolves when all arrived."""

    def __init__(self, n: int, done: asyncio.Future[None]) -> None:
        self.left, self.done = n, done
        self._handler = object()

    def put_package(self, _pkg: Any) -> None:
        self.left -= 1
        if not self.left:
            self.done.set_result(None)


async def _receive(protocol: str, n: int, rate: float) -> dict[str, Any]:
    from gmqtt.mqtt.protocol import MQTTProtocol
    from gmqtt.mqtt.utils import ConnectionState, IdGenerator

    from edge_agent.mqtt_framing import FramingProtocol

    a, b = socket.socketpair()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    sink = _Sink(n, done)
    if protocol == "bare":
        size = len(PACKET)

        class Bare(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                for _ in range(len(data) // size):
                    sink.put_package(None)

        await loop.create_connection(Bare, sock=a)
    else:
        cls = FramingProtocol if protocol == "edge_framing" else MQTTProtocol
        _t, proto = await loop.create_connection(lambda: cls(connection_state=ConnectionState(), id_generator=IdGenerator()), sock=a)
        proto.set_connection(sink)
    pid = os.fork()
    if pid == 0:  # the sender
        a.close()
        _send(b, n, rate)
        os._exit(0)
    b.close()
    c0, w0 = time.thread_time(), time.perf_counter()
    await asyncio.wait_for(done, n / rate + 30)
    c1, w1 = time.thread_time(), time.perf_counter()
    os.waitpid(pid, 0)
    return {"cpu_us_per_packet": (c1 - c0) / n * 1e6, "loop_cpu_percent": 100 * (c1 - c0) / (w1 - w0)}


def _one(loop_name: str, protocol: str, n: int, rate: float) -> dict[str, Any]:
    """One measurement in a fresh interpreter (a fork per loop would share state)."""
    code = f"import json, bench.receive_path as r; print(json.dumps(r._child({loop_name!r}, {protocol!r}, {n}, {rate})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=n / rate + 120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(loop_name: str, protocol: str, n: int, rate: float) -> dict[str, Any]:
    from edge_agent import event_loop

    return event_loop.run(_receive(protocol, n, rate), "uvloop" if loop_name == "uvloop" else "asyncio")


def run(quick: bool = False) -> dict[str, Any]:
    repeats = 1 if quick else 3
    rows: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):  # interleaved, so slow phases of the VM hit every variant alike
        for lp in LOOPS:
            for proto in PROTOCOLS:
                r = _one(lp, proto, N_PACKETS, RATE)
                rows.setdefault(f"{lp}/{proto}", {"runs": []})["runs"].append(r["cpu_us_per_packet"])
    for row in rows.values():
        runs = sorted(row["runs"])
        row["median_us"] = runs[len(runs) // 2]
    return {"packets": N_PACKETS, "rate_per_s": RATE, "repeats": repeats, "cpu_us_per_packet": rows}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
