"""``json_multi``: several named readings of one moment in one JSON object.

``{"ts": 1700000000.0, "current": 1.3, "pressure": 0.05, "flow": 32.0}``: the common shape
of a PLC that publishes one message per machine. Every key but the timestamp field
(``ts_field``, optional: receive time when absent) is a sensor name and its value a reading.
Each reading feeds its own series (the subscription's ``series`` template, with ``{sensor}``
the key) and, with ``machine`` set, all of them feed the machine's row at once.

A value that is not a finite number (a string, a boolean, null, a nested object, NaN), or is
beyond ``ingest.max_abs_value`` (``out_of_range``), is rejected on its own, with its key named, and the message's other readings are kept: one bad
field of a PLC must not blind the other sensors. A message with more keys than
``ingest.max_batch`` is rejected whole (``batch_too_large``).
"""

from __future__ import annotations

from typing import Any

from edge_agent.payloads.common import Rejected, TsLimits, out_of_range, parse_ts
from edge_agent.payloads.json_object import loads_object

_MAX_KEY = 128


def decode(payload: bytes, now: float, opts: Any, limits: TsLimits) -> tuple[list[tuple[str, float]], float, list[tuple[str, str, str]]]:
    """-> (readings as (sensor, value), timestamp, refused as (sensor, reason, detail))."""
    doc = loads_object(payload)
    ts_field = opts.ts_field
    raw_ts = doc.get(ts_field)
    ts = now if raw_ts is None else parse_ts(raw_ts, opts.ts_unit, now, limits)
    n = len(doc) - (ts_field in doc)
    if n == 0:
        raise Rejected("empty", "no readings besides the timestamp")
    if n > opts.max_batch:
        raise Rejected("batch_too_large", f"{n} readings > {opts.max_batch}")
    readings: list[tuple[str, float]] = []
    refused: list[tuple[str, str, str]] = []
    max_abs = opts.max_abs
    for key, raw in doc.items():
        if key == ts_field:
            continue
        if not key or len(key) > _MAX_KEY or "\x00" in key or "/" in key:
            refused.append((key[:_MAX_KEY], "bad_key", "a sensor key must be 1..128 characters, without '/' or NUL"))
            continue
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            refused.append((key, "not_a_number", f"{key!r}: value of type {type(raw).__name__}"))
            continue
        try:
            value = float(raw)
        except OverflowError:
            refused.append((key, "non_finite", f"{key!r}: out of float range"))
            continue
        if not -max_abs <= value <= max_abs:  # also false for NaN
            exc = out_of_range(value, max_abs)
            refused.append((key, exc.reason, f"{key!r}: {exc.detail}"))
            continue
        readings.append((key, value))
    return readings, ts, refused
