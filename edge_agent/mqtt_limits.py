"""What the agent may put on the wire: MQTT's own limits and the broker's.

Every message the agent sends (alarms, command answers, status) is checked here *before* it
is committed to the outbox (``Agent.publish_durable``) and again before it is written to the
socket (``Agent.pump``), because the broker's limit is only known once it has answered
CONNECT, and may be lower after a reconnect. A message that breaks a limit can never be
delivered: left in the queue it would be retried for ever and hold back every alarm behind
it (issue 15, finding 1: a 65,535-byte command topic made the refusal's
``{topic}/response`` longer than MQTT allows, and the outbox head wedged for 24 h).

The limits (MQTT 5.0, sections 1.5.4, 2.1.4, 3.3.2.1, 3.2.2.3.6; 3.1.1 has the same topic
and length rules):

- a topic name is UTF-8 of 1..65,535 bytes, without U+0000 and without the wildcards ``+``
  and ``#`` (those are for filters only);
- a packet's remaining length is at most 268,435,455 bytes (a four-byte varint);
- an MQTT 5 broker may advertise a smaller *Maximum Packet Size* (whole packet, fixed header
  included) in its CONNACK; a client that sends more is disconnected.

Hand-written because gmqtt checks none of this before encoding (it fails inside
``struct.pack`` for a long topic and sends whatever size it is given).
"""

from __future__ import annotations

MAX_TOPIC_BYTES = 65_535
MAX_REMAINING_LENGTH = 268_435_455
# Fixed header: one command byte and a remaining length of at most four bytes.
MAX_PACKET_BYTES = 1 + 4 + MAX_REMAINING_LENGTH


class Unsendable(ValueError):
    """A message that no broker (or not this broker) will take; ``reason`` is a short code:
    ``bad_topic``, ``topic_too_long`` or ``too_large``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def topic_problem(topic: str) -> Unsendable | None:
    """Why ``topic`` cannot be a PUBLISH topic name, or None when it can."""
    if not topic:
        return Unsendable("bad_topic", "empty topic")
    try:
        n = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return Unsendable("bad_topic", "topic is not valid UTF-8 (lone surrogate)")
    if n > MAX_TOPIC_BYTES:
        return Unsendable("topic_too_long", f"topic of {n} bytes (MQTT allows {MAX_TOPIC_BYTES})")
    if "+" in topic or "#" in topic:
        return Unsendable("bad_topic", "topic contains a wildcard (+ or #)")
    if "\x00" in topic:
        return Unsendable("bad_topic", "topic contains U+0000")
    return None


def _varint_len(n: int) -> int:
    return 1 if n < 128 else 2 if n < 16_384 else 3 if n < 2_097_152 else 4


def properties_bytes(expiry: bool, correlation: bytes | None) -> int:
    """Size of a PUBLISH's MQTT 5 property block as the agent sends it: message expiry
    (id + 4 bytes) and correlation data (id + 2-byte length + data), plus the block's own
    length varint. A 3.1.1 PUBLISH has no block; counting it anyway errs on the safe side."""
    body = (5 if expiry else 0) + (3 + len(correlation) if correlation is not None else 0)
    return _varint_len(body) + body


def publish_packet_bytes(topic_bytes: int, payload_bytes: int, qos: int, props_bytes: int) -> int:
    """The whole PUBLISH packet: fixed header, topic, packet id (QoS > 0), properties, payload."""
    remaining = 2 + topic_bytes + (2 if qos else 0) + props_bytes + payload_bytes
    return 1 + _varint_len(remaining) + remaining


def check_publish(topic: str, payload_bytes: int, qos: int, props_bytes: int, limit: int = MAX_PACKET_BYTES) -> None:
    """Raise ``Unsendable`` unless this PUBLISH is valid and at most ``limit`` bytes."""
    problem = topic_problem(topic)
    if problem is not None:
        raise problem
    size = publish_packet_bytes(len(topic.encode("utf-8")), payload_bytes, qos, props_bytes)
    limit = min(limit, MAX_PACKET_BYTES)
    if size > limit:
        raise Unsendable("too_large", f"a {size}-byte packet (the limit is {limit} bytes)")


def payload_budget(topic: str, qos: int, props_bytes: int, limit: int = MAX_PACKET_BYTES) -> int:
    """The largest payload that fits in one PUBLISH to ``topic`` under ``limit`` (may be < 0)."""
    fixed = publish_packet_bytes(len(topic.encode("utf-8", "replace")), 0, qos, props_bytes)
    room = min(limit, MAX_PACKET_BYTES) - fixed
    # The remaining-length varint grows with the payload: take the worst case.
    return room - 3
