"""Sparkplug B wire pieces shared by ingest and the edge node: topics, datatypes, values.

Payloads are protobuf messages of the published ``sparkplug_b.proto`` (Eclipse Tahu), through
Google's ``protobuf`` runtime and the generated ``sparkplug_b_pb2.py`` (``make proto``): nothing
here parses protobuf by hand. What is ours is the Sparkplug meaning on top of the schema:
topic forms (specification chapter 4), which datatypes are measurements, and how signed
integers travel in the unsigned ``int_value``/``long_value`` fields (two's complement; some
encoders sign-extend an Int8 to 32 bits, others do not, so only the datatype's width is read).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from edge_agent.sparkplug.sparkplug_b_pb2 import DataType, Payload

__all__ = ["DataType", "Payload", "NAMESPACE", "SparkplugTopic", "parse_topic", "now_ms"]

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"

NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})
# Characters a group, edge node or device id must not contain (tck-id-topic-structure-namespace-valid-*).
RESERVED = frozenset("+/#")

# Datatypes that are measurements, with (value field, bits of a signed integer or 0).
NUMERIC: dict[int, tuple[str, int]] = {
    DataType.Int8: ("int_value", 8),
    DataType.Int16: ("int_value", 16),
    DataType.Int32: ("int_value", 32),
    DataType.Int64: ("long_value", 64),
    DataType.UInt8: ("int_value", 0),
    DataType.UInt16: ("int_value", 0),
    DataType.UInt32: ("int_value", 0),
    DataType.UInt64: ("long_value", 0),
    DataType.Float: ("float_value", 0),
    DataType.Double: ("double_value", 0),
}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    group: str
    type: str  # NBIRTH, DDATA, ...
    node: str
    device: str | None  # None for node-level messages


def parse_topic(topic: str) -> SparkplugTopic | None:
    """``spBv1.0/group/TYPE/node[/device]``, or None when the topic is not of that form."""
    parts = topic.split("/")
    n = len(parts)
    if n not in (4, 5) or parts[0] != NAMESPACE:
        return None
    group, mtype, node = parts[1], parts[2], parts[3]
    if not group or not node:
        return None
    if n == 4:
        return SparkplugTopic(group, mtype, node, None) if mtype in NODE_TYPES else None
    device = parts[4]
    return SparkplugTopic(group, mtype, node, device) if device and mtype in DEVICE_TYPES else None


def topic(group: str, mtype: str, node: str, device: str | None = None) -> str:
    base = f"{NAMESPACE}/{group}/{mtype}/{node}"
    return base if device is None else f"{base}/{device}"


def valid_id(value: str) -> bool:
    """A group, edge node or device id: non-empty UTF-8 without ``+ / #`` (nor NUL)."""
    return bool(value) and not (RESERVED & set(value)) and "\x00" not in value


def numeric_value(metric: Payload.Metric, datatype: int) -> float | None:
    """A numeric metric's value as a float; None when the metric carries no value (null).

    Raises ValueError when the value sits in a field its datatype does not use."""
    field = metric.WhichOneof("value")
    if field is None:
        return None
    want, bits = NUMERIC[datatype]
    if field != want:
        raise ValueError(f"datatype {DataType.Name(datatype)} carried in {field}")
    raw = getattr(metric, field)
    if bits:
        raw &= (1 << bits) - 1
        if raw >= 1 << (bits - 1):
            raw -= 1 << bits
    return float(raw)


def set_value(metric: Payload.Metric, datatype: int, value: object) -> None:
    """Fill a metric's value for ``datatype`` (the types the edge node publishes); None is null."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        metric.is_null = True
    elif datatype == DataType.Double:
        metric.double_value = float(value)  # type: ignore[arg-type]
    elif datatype == DataType.Boolean:
        metric.boolean_value = bool(value)
    elif datatype in (DataType.String, DataType.Text):
        metric.string_value = str(value)
    elif datatype in (DataType.Int64, DataType.UInt64):
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF  # type: ignore[call-overload]
    elif datatype in (DataType.Int32, DataType.UInt32):
        metric.int_value = int(value) & 0xFFFFFFFF  # type: ignore[call-overload]
    else:
        raise ValueError(f"no encoder for datatype {datatype}")


def rebirth_request(ts_ms: int | None = None) -> bytes:
    """An NCMD payload asking an edge node for a new birth sequence (no seq: tck-id-payloads-ncmd-seq)."""
    ts = now_ms() if ts_ms is None else ts_ms
    p = Payload(timestamp=ts)
    m = p.metrics.add(name=REBIRTH, timestamp=ts, datatype=DataType.Boolean)
    m.boolean_value = True
    return p.SerializeToString()


# ---- subscriptions (validated by config.py) ------------------------------------------------
DEFAULT_FILTER = "spBv1.0/+/+/+/#"
DEFAULT_SERIES = "{group}/{node}/{device}/{metric}"
SERIES_FIELDS = ("group", "node", "device", "metric")
_REF = re.compile(r"\{([^{}]*)\}")


def parse_filter(text: str) -> str:
    """A Sparkplug subscription: ``spBv1.0/{group}/+/{node}/#`` where group and node are an id or
    ``+`` (``{group}``/``{node}`` mean ``+``). Returns the MQTT filter; ValueError otherwise."""
    parts = text.split("/")
    if len(parts) != 5 or parts[0] != NAMESPACE or parts[2] not in ("+", "{type}") or parts[4] != "#":
        raise ValueError(f"a sparkplug_b subscription topic must look like 'spBv1.0/<group or +>/+/<node or +>/#', not {text!r}")
    group = "+" if parts[1] in ("+", "{group}") else parts[1]
    node = "+" if parts[3] in ("+", "{node}") else parts[3]
    for value, what in ((group, "group"), (node, "edge node")):
        if value != "+" and not valid_id(value):
            raise ValueError(f"{text!r}: {what} id {value!r} must not contain + / # (or be empty)")
    return f"{NAMESPACE}/{group}/+/{node}/#"


def check_series(template: str) -> None:
    names = _REF.findall(template)
    bad = [n for n in names if n not in SERIES_FIELDS]
    if bad:
        raise ValueError(f"series template {template!r} uses {{{bad[0]}}}; a sparkplug_b series can use {', '.join('{' + f + '}' for f in SERIES_FIELDS)}")
    if "metric" not in names:
        raise ValueError(f"series template {template!r} must contain {{metric}}")
