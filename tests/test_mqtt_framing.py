"""The agent's MQTT framing (edge_agent/mqtt_framing.py): every packet comes out whole and
in order however the stream is split, an oversized PUBLISH is reported and skipped without
being held in memory, and through a real broker the stream carries on exactly after it."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from faults import Collector, PacedPublisher
from helpers import AgentProcess, Mosquitto, agent_config, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.mqtt_framing import Framer, MalformedPacket

LIMIT = 5_000


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: bytes, qos: int, mid: int, payload: bytes) -> tuple[int, bytes]:
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"") + payload
    return 0x30 | (qos << 1), body


def frame(cmd: int, body: bytes) -> bytes:
    return bytes([cmd]) + varint(len(body)) + body


packets = st.one_of(
    st.tuples(st.sampled_from([0x20, 0x40, 0x90, 0xB0, 0xD0, 0xE0]), st.binary(max_size=300)),
    st.builds(
        publish_packet,
        st.binary(min_size=1, max_size=40),
        st.integers(0, 2),
        st.integers(1, 65535),
        st.one_of(st.binary(max_size=200), st.integers(0, 20_000).map(lambda n: b"p" * n)),
    ),
)


class Recorder:
    def __init__(self) -> None:
        self.packets: list[tuple[int, bytes]] = []
        self.oversize: list[tuple[bytes, int, int, int]] = []


@settings(max_examples=300, deadline=None)
@given(st.lists(packets, max_size=30), st.lists(st.integers(1, 9_000), min_size=1, max_size=50))
def test_packets_come_out_whole_and_in_order_for_any_split(pkts: list[tuple[int, bytes]], cuts: list[int]) -> None:
    rec = Recorder()
    framer = Framer(rec.packets.append, lambda *a: rec.oversize.append(a), LIMIT)
    stream = b"".join(frame(c, b) for c, b in pkts)
    pos = k = 0
    while pos < len(stream):
        n = cuts[k % len(cuts)]
        framer.feed(stream[pos:pos + n])
        pos += n
        k += 1
    expected, oversize = [], []
    for cmd, body in pkts:
        qos = (cmd & 0x06) >> 1
        if cmd & 0xF0 == 0x30 and qos < 2 and len(body) > LIMIT:
            (tlen,) = struct.unpack_from("!H", body)
            mid = struct.unpack_from("!H", body, 2 + tlen)[0] if qos else 0
            oversize.append((body[2:2 + tlen], qos, mid, len(body)))
        else:
            expected.append((cmd, body))
    assert rec.packets == expected
    assert rec.oversize == oversize
    assert not framer.buf and framer.skip == 0


def test_a_10_mb_publish_is_never_buffered() -> None:
    rec = Recorder()
    framer = Framer(rec.packets.append, lambda *a: rec.oversize.append(a), 1_200_000)
    big = frame(*publish_packet(b"plant/l1/m1/temp", 1, 7, b"x" * (10 * 1024 * 1024)))
    small = frame(*publish_packet(b"plant/l1/m1/temp", 1, 8, b"21.5"))
    stream = big + small
    peak = 0
    for pos in range(0, len(stream), 65_536):
        framer.feed(stream[pos:pos + 65_536])
        peak = max(peak, len(framer.buf))
    assert rec.oversize == [(b"plant/l1/m1/temp", 1, 7, len(big) - 5)]
    assert rec.packets == [publish_packet(b"plant/l1/m1/temp", 1, 8, b"21.5")]
    assert peak <= 65_536, f"held {peak} bytes of an oversized packet"


def test_a_remaining_length_over_four_bytes_is_malformed() -> None:
    framer = Framer(lambda p: None)
    with pytest.raises(MalformedPacket):
        framer.feed(b"\x30\xff\xff\xff\xff\x01")


@pytest.mark.timeout(90)
def test_through_a_broker_oversized_readings_are_counted_acked_and_the_stream_goes_on(tmp_path: Path) -> None:
    """A 10 MB QoS 1 reading is discarded unread (dead letter ``too_large``), acknowledged
    (not redelivered after a restart), and the readings after it are handled in order."""
    broker = Mosquitto(tmp_path / "broker").start()
    cfg = agent_config(tmp_path, broker, **{"ingest.dead_letter_topic": "edge/{gateway_id}/dead"})
    agent = AgentProcess(tmp_path, cfg).start()
    dead = Collector(broker, "edge/gw-test/dead", clean=True)
    plc = PacedPublisher(broker)
    try:
        agent.wait_connected()
        topic = "plant/l1/m1/temp"
        plc.publish_chunk([
            (topic, b'{"value": 1, "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'),  # over the packet limit
            (topic, b"not json"),
            (topic, b'{"value": 1, "pad": "' + b"y" * (1024 * 1024 + 10) + b'"}'),  # over the payload limit only
            (topic, b'{"value": "abc"}'),
        ])
        wait_for(lambda: len(dead.messages) >= 4, 30, "four dead letters")
        reasons = [d["reason"] for d in dead.json()]
        assert reasons == ["too_large", "bad_json", "too_large", "not_a_number"]
        assert "discarded unread" in dead.json()[0]["detail"]
        assert "discarded unread" not in dead.json()[2]["detail"]

        # Acknowledged: a restarted agent (same client id, persistent session) is not
        # handed the 10 MB message again; the next dead letter is the new one.
        assert agent.stop() == 0
        agent = AgentProcess(tmp_path, cfg, name="agent2").start()
        agent.wait_connected()
        plc.publish_chunk([(topic, b"not json either")])
        wait_for(lambda: len(dead.messages) >= 5, 30, "the fifth dead letter")
        time.sleep(0.5)
        assert [d["reason"] for d in dead.json()[4:]] == ["bad_json"]
    finally:
        agent.stop()
        plc.close()
        dead.close()
        broker.stop()
    assert json.loads(dead.messages[0][2])["topic"] == topic
