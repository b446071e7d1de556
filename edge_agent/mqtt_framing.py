"""Cutting MQTT packets out of the byte stream, without ever holding an oversized one.

gmqtt's reader appends every 64 KB read to an immutable ``bytes`` buffer. A 10 MB PUBLISH
therefore costs about 160 ever larger copies (some 800 MB of memcpy), and glibc, seeing
multi-megabyte blocks come and go, raises its mmap threshold and keeps later large blocks
on the heap: the agent's resident memory stayed up to 23 MB higher after three such
messages (``tests/test_fault_junk_flood.py``; +0.1 MB with this reader). A gateway cannot
choose what a broken PLC publishes, so here:

- one ``bytearray`` per connection; complete packets are consumed from its front;
- of a PUBLISH whose declared size exceeds ``max_packet``, only the head (topic and packet
  id) is read; it is reported through ``on_oversize`` and the rest of it is discarded as
  it streams in. Memory per connection stays below ``max_packet`` plus one read.

Everything else (packet types, MQTT 5 properties, QoS 2) is still gmqtt's; only the framing
changes. ``install()`` makes gmqtt's connections use ``FramingProtocol``, which frames in the
transport's ``data_received`` (no reader task) and takes its limit and callback from the
client's package handler (``edge_max_packet``, ``edge_oversize``, set by ``mqtt_link``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import gmqtt.mqtt.connection as gmqtt_connection
from gmqtt.mqtt.package import Package
from gmqtt.mqtt.protocol import BaseMQTTProtocol, MQTTProtocol

log = logging.getLogger(__name__)

_PUBLISH = 0x30
_MAX_VARINT_MULT = 128 ** 3


class MalformedPacket(Exception):
    pass


def _pair(command: int, body: bytes) -> tuple[int, bytes]:
    return command, body


class Framer:
    """Feed it bytes as they arrive; it calls ``on_packet(package(command, body))`` per
    complete packet and ``on_oversize(topic, qos, packet_id, size)`` per PUBLISH (QoS 0/1)
    larger than ``max_packet``, whose body it never keeps."""

    def __init__(
        self,
        on_packet: Callable[[Any], None],
        on_oversize: Callable[[bytes, int, int, int], None] | None = None,
        max_packet: int = 0,
        package: Callable[[int, bytes], Any] = _pair,
    ) -> None:
        self.on_packet = on_packet
        self.package = package
        self.on_oversize = on_oversize
        self.max_packet = max_packet if (max_packet and on_oversize is not None) else 1 << 62
        self.buf = bytearray()
        self.skip = 0  # bytes of an oversized packet still to discard

    def feed(self, chunk: bytes) -> None:
        if self.skip:
            if len(chunk) <= self.skip:
                self.skip -= len(chunk)
                return
            chunk = chunk[self.skip:]
            self.skip = 0
        buf = self.buf
        buf += chunk
        pos = self._cut(buf)
        if pos:
            del buf[:pos]

    def _cut(self, buf: bytearray) -> int:
        """Hand out every complete packet at the front of ``buf``; returns how many bytes
        were consumed."""
        n = len(buf)
        pos = 0
        on_packet = self.on_packet
        package = self.package
        view = memoryview(buf)
        try:
            while n - pos >= 2:
                # Fixed header: one command byte, then the remaining length as a varint
                # (one byte for the small readings that make up nearly all the traffic).
                length = buf[pos + 1]
                i = pos + 2
                if length & 0x80:
                    length &= 0x7F
                    mult = 128
                    complete = False
                    while i < n:
                        b = buf[i]
                        i += 1
                        length += (b & 0x7F) * mult
                        if not b & 0x80:
                            complete = True
                            break
                        mult *= 128
                        if mult > _MAX_VARINT_MULT:
                            raise MalformedPacket("remaining length longer than 4 bytes")
                    if not complete:
                        break
                cmd = buf[pos]
                end = i + length
                qos = (cmd & 0x06) >> 1
                if length > self.max_packet and cmd & 0xF0 == _PUBLISH and qos < 2:
                    if n < i + 2:
                        break
                    tlen = (buf[i] << 8) | buf[i + 1]
                    head = i + 2 + tlen + (2 if qos else 0)
                    if n < head:
                        break  # wait for the topic and packet id (at most 64 KB)
                    mid = (buf[head - 2] << 8) | buf[head - 1] if qos else 0
                    self.on_oversize(bytes(view[i + 2:i + 2 + tlen]), qos, mid, length)  # type: ignore[misc]
                    if end > n:
                        self.skip = end - n
                        return n
                    pos = end
                    continue
                if end > n:
                    break
                on_packet(package(cmd, bytes(view[i:end])))
                pos = end
        finally:
            view.release()  # a live view would forbid resizing the buffer
        return pos


class FramingProtocol(MQTTProtocol):
    """gmqtt's protocol, reading straight from the transport's callback.

    gmqtt feeds every read into an ``asyncio.StreamReader`` and parses it in a reader task:
    each arrival costs a future, a task step and a second pass of the event loop before a
    reading is even looked at. Here ``data_received`` frames and dispatches at once. Readings
    mostly arrive one per read, so this is paid per reading (``bench/receive_path.py``: loop
    CPU per arriving packet 46 µs with gmqtt's reader, 34 µs with this one, on the standard
    loop). Backpressure is unchanged: while a read is being handled the socket is not read,
    so TCP pushes back on the broker.
    """

    _framer: Framer | None = None
    _early: bytes = b""

    def connection_made(self, transport: Any) -> None:
        # BaseMQTTProtocol's, not MQTTProtocol's: no reader task.
        BaseMQTTProtocol.connection_made(self, transport)

    def set_connection(self, conn: Any) -> None:
        super().set_connection(conn)
        if self._early:
            early, self._early = self._early, b""
            asyncio.get_running_loop().call_soon(self.data_received, early)

    def data_received(self, data: bytes) -> None:
        framer = self._framer
        if framer is None:
            conn = self._connection
            if conn is None:
                # gmqtt sends CONNECT only once the connection is attached, so a broker
                # cannot speak first; should one, its bytes wait for set_connection.
                self._early += data
                return
            handler = conn._handler
            framer = self._framer = Framer(
                conn.put_package,
                getattr(handler, "edge_oversize", None),
                getattr(handler, "edge_max_packet", 0),
                Package,
            )
        try:
            framer.feed(data)
        except MalformedPacket as exc:
            log.warning("closing the broker connection: malformed packet (%s)", exc)
            self._transport.close()
        except Exception:
            # Closing makes the link reconnect; a connection that stopped reading would not.
            log.exception("closing the broker connection after an error handling its input")
            self._transport.close()

    def eof_received(self) -> bool:
        # The broker closed its side: close ours too, so connection_lost tells gmqtt.
        return False


def install() -> None:
    """Make every gmqtt connection in this process frame its input with FramingProtocol."""
    gmqtt_connection.MQTTProtocol = FramingProtocol  # type: ignore[misc]
