"""Shared pieces of the fault tests: a fuzz corpus of hostile topics and payloads, process
signals for brokers and agents, read-only views of the agent's state, and paced publishing.

Nothing here mocks the agent: these helpers only drive real processes and read real files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sqlite3
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from helpers import Mosquitto, free_port

# ---- fuzz corpus --------------------------------------------------------------------------
# (name, payload, reason the ingest must count it under, for the default ``json`` format and
# a 1 MiB payload limit). ``None`` as reason: accepted as a reading.
NOW_PLACEHOLDER = b"@NOW@"


def _nested(depth: int) -> bytes:
    return b'{"value": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


PAYLOAD_CASES: list[tuple[str, bytes, str | None]] = [
    ("empty", b"", "empty"),
    ("whitespace", b"   ", "bad_json"),
    ("truncated", b'{"value": 1', "bad_json"),
    ("not_json", b"hello", "bad_json"),
    ("array", b"[1, 2, 3]", "not_an_object"),
    ("bare_number", b"21.5", "not_an_object"),
    ("bare_string", b'"21.5"', "not_an_object"),
    ("null", b"null", "not_an_object"),
    ("nan", b'{"value": NaN}', "non_finite"),
    ("inf", b'{"value": Infinity}', "non_finite"),
    ("minus_inf", b'{"value": -Infinity}', "non_finite"),
    ("overflow_float", b'{"value": 1e999}', "non_finite"),
    ("huge_int", b'{"value": ' + b"9" * 400 + b"}", "non_finite"),
    ("numeric_string", b'{"value": "21.5"}', "not_a_number"),
    ("bool", b'{"value": true}', "not_a_number"),
    ("null_value", b'{"value": null}', "not_a_number"),
    ("object_value", b'{"value": {"x": 1}}', "not_a_number"),
    ("list_value", b'{"value": [1]}', "not_a_number"),
    ("missing_value", b'{"v": 1}', "missing_value"),
    ("invalid_utf8", b'{"value": 1, "x": "\xff\xfe"}', "bad_utf8"),
    ("lone_surrogate_escape", b'{"value": 1, "x": "\\ud800"}', None),
    ("nested_deep", _nested(100_000), "bad_json"),
    ("nested_moderate", _nested(500), "not_a_number"),
    ("ts_far_past", b'{"value": 1, "ts": 1}', "ts_out_of_range"),
    ("ts_far_future", b'{"value": 1, "ts": 9999999999}', "ts_out_of_range"),
    ("ts_ms_far_future", b'{"value": 1, "ts": 99999999999999}', "ts_out_of_range"),
    ("ts_nan", b'{"value": 1, "ts": NaN}', "bad_timestamp"),
    ("ts_string", b'{"value": 1, "ts": "yesterday"}', "bad_timestamp"),
    ("ts_bool", b'{"value": 1, "ts": false}', "bad_timestamp"),
    ("ts_list", b'{"value": 1, "ts": [1]}', "bad_timestamp"),
    ("ts_iso_far", b'{"value": 1, "ts": "0001-01-01T00:00:00"}', "ts_out_of_range"),
    ("ts_huge_int", b'{"value": 1, "ts": ' + b"9" * 400 + b"}", "ts_out_of_range"),
    ("nul_bytes", b'{"value": 1\x00}', "bad_json"),
    ("ten_mb", b'{"value": 1, "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}', "too_large"),
    ("big_float", b'{"value": 1.7e308}', "out_of_range"),
    ("huge_finite", b'{"value": -1e200}', "out_of_range"),
    ("big_counter_ok", b'{"value": 18446744073709551615}', None),
    ("negative_zero", b'{"value": -0.0}', None),
    ("ts_now", b'{"value": 2, "ts": ' + NOW_PLACEHOLDER + b"}", None),
    ("ts_out_of_order", b'{"value": 3, "ts": @NOW-100@}', None),
]


def materialise(payload: bytes, now: float | None = None) -> bytes:
    """Fill the time placeholders of a corpus payload."""
    now = time.time() if now is None else now
    return payload.replace(NOW_PLACEHOLDER, repr(now).encode()).replace(b"@NOW-100@", repr(now - 100).encode())


# Topics. The agent subscribes ``plant/{line}/{machine}/{sensor}`` (series
# ``{machine}/{sensor}``) and, in the in-process tests, ``raw/{path*}`` (series ``{path}``) so
# that series ids with slashes exist too.
HOSTILE_SEGMENTS = [
    "..", ".", "%2e%2e", "%2F", "%", "%00", "%%", "~root", "-rf", " ", "\t", "é", "ünïcødé", "传感器",
    "🔥", "\u202e", "con", "NUL", "a\\..\\b", "$SYS", "x" * 300, "\ufeff",
]


def _control(t: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in t)


def hostile_topics() -> list[str]:
    """Topics as the broker would deliver them (valid UTF-8, no NUL or control characters,
    which mosquitto refuses as a malformed packet, no wildcards)."""
    return [t for t in _all_hostile_topics() if not _control(t)]


def _all_hostile_topics() -> list[str]:
    out = []
    for seg in HOSTILE_SEGMENTS:
        out.append(f"plant/l1/{seg}/temp")
        out.append(f"plant/l1/m1/{seg}")
        out.append(f"raw/{seg}")
    out += [
        "raw/../../etc/passwd", "raw//etc/passwd", "raw/a/../../b", "raw/../..", "raw/%2e%2e/%2e%2e/x",
        "plant/l1/../..", "plant/../../..", "raw/" + "/".join([".."] * 40), "raw/" + "a" * (65535 - 4),
        "plant/l1/" + "m" * (65535 - 14) + "/temp", "raw/" + "é" * 200, "plant//m1/temp", "plant/l1/m1/",
        "raw/", "raw", "plant/l1/m1/temp/extra",
    ]
    return out


def in_process_only_topics() -> list[str]:
    """Topics a broker refuses (NUL, lone surrogates from invalid UTF-8): still never a crash."""
    return ["plant/l1/a\x00b/temp", "raw/\x00", "raw/a\x00/../b", "plant/l1/\udcff/temp", "raw/\udc80\udc80"] + [
        t for t in _all_hostile_topics() if _control(t)]


# ---- processes ----------------------------------------------------------------------------
def sigstop(proc: Any) -> None:
    os.kill(proc.pid, signal.SIGSTOP)


def sigcont(proc: Any) -> None:
    os.kill(proc.pid, signal.SIGCONT)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# ---- read-only views of agent state -------------------------------------------------------
def outbox_rows(path: Path) -> list[tuple[int, str, bytes]]:
    """(id, topic, payload) of every row, read through a read-only connection (WAL included)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [(i, t, bytes(p)) for i, t, p in db.execute("SELECT id, topic, payload FROM outbox ORDER BY id")]
    finally:
        db.close()


def store_snapshot(models: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under the model store (dot-files included)."""
    out = {}
    if not models.exists():
        return out
    for p in sorted(models.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(models))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def models_trained(state: Path) -> int:
    return len(list((state / "models").glob("*/ACTIVE")))


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---- MQTT clients -------------------------------------------------------------------------
class Collector:
    """A SCADA-side paho client with a persistent session (fixed id, clean_session off) that
    reconnects on its own after a broker restart and records every message with its receive time."""

    def __init__(self, broker: Mosquitto, topic: str, client_id: str | None = None, clean: bool = False) -> None:
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client_id = client_id or f"scada-{free_port()}"
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=clean)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()

        self.sessions_present: list[bool] = []  # per (re)connect: did the broker still hold our session?

        def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
            self.sessions_present.append(bool(getattr(flags, "session_present", False)))
            self.connected.set()
            c.subscribe(topic, qos=1)

        self.client.on_connect = on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("collector did not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((time.time(), msg.topic, msg.payload, bool(msg.retain)))

    def json(self, prefix: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for _, t, p, _ in self.messages if t.startswith(prefix)]

    def timed(self, prefix: str = "") -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return [(rt, json.loads(p)) for rt, t, p, _ in self.messages if t.startswith(prefix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class PacedPublisher:
    """The PLC side: QoS 1 readings in chunks, each chunk's PUBACKs awaited before the next."""

    def __init__(self, broker: Mosquitto, client_id: str | None = None) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"plc-{free_port()}")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish_chunk(self, rows: list[tuple[str, bytes]], qos: int = 1, timeout: float = 30.0) -> None:
        infos = [self.client.publish(t, p, qos=qos) for t, p in rows]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError("broker did not acknowledge a reading")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def reading(value: float, ts: float) -> bytes:
    return json.dumps({"value": value, "ts": ts}).encode()


def chunks(rows: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(rows), n):
        yield rows[i:i + n]


# ---- hostile model files ---------------------------------------------------------------------
def deep_json(depth: int) -> bytes:
    return b'{"detector": "statistical", "x": ' + b"[" * depth + b"]" * depth + b"}"


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npz_bomb(gib: float = 1.0) -> bytes:
    """A small .npz whose one member inflates to ``gib`` GiB of zeros (sizes declared honestly)."""
    n = int(gib * (1 << 30)) // 8
    header = npy_header((n,))
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 24)
    parts = [comp.compress(header)]
    crc = zlib.crc32(header)
    left = n * 8
    while left:
        c = chunk[: min(left, len(chunk))]
        parts.append(comp.compress(c))
        crc = zlib.crc32(c, crc)
        left -= len(c)
    parts.append(comp.flush())
    data = b"".join(parts)
    info = zipfile.ZipInfo("left.npy")
    info.compress_type = zipfile.ZIP_DEFLATED
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        # Write the precompressed stream as it is: zipfile's raw path, with honest sizes.
        info.file_size, info.compress_size, info.CRC = len(header) + n * 8, len(data), crc
        zf.fp.write(info.FileHeader())  # type: ignore[union-attr]
        info.header_offset = 0
        zf.fp.write(data)  # type: ignore[union-attr]
        zf.filelist.append(info)
        zf.NameToInfo[info.filename] = info
        zf.start_dir = zf.fp.tell()  # type: ignore[union-attr]
    return out.getvalue()
