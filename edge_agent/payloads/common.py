"""Shared pieces of the payload decoders: the rejection type and timestamp parsing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime


class Rejected(Exception):
    """A reading that cannot be used. ``reason`` is a short stable code (a metrics label)."""

    __slots__ = ("reason", "detail")

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TsLimits:
    max_future_s: float
    max_past_s: float


# Epoch values above this are taken as milliseconds (2286-11-20 in seconds; 1973 in ms).
_MS_CUTOFF = 1e10


def parse_ts(raw: object, unit: str, now: float, limits: TsLimits) -> float:
    """A reading's timestamp as epoch seconds. ``unit``: auto | s | ms | iso."""
    if isinstance(raw, bool):
        raise Rejected("bad_timestamp", "boolean timestamp")
    if isinstance(raw, (int, float)):
        if unit == "iso":
            raise Rejected("bad_timestamp", "expected an ISO 8601 string")
        try:
            ts = float(raw)
        except OverflowError:  # a JSON integer beyond float range
            raise Rejected("ts_out_of_range", "timestamp out of float range") from None
        if not math.isfinite(ts):
            raise Rejected("bad_timestamp", "non-finite timestamp")
        if unit == "ms" or (unit == "auto" and abs(ts) > _MS_CUTOFF):
            ts /= 1000.0
    elif isinstance(raw, str):
        if unit in ("s", "ms"):
            raise Rejected("bad_timestamp", f"expected epoch {unit}")
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise Rejected("bad_timestamp", "not ISO 8601") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)  # plant clocks without offset are taken as UTC
        ts = dt.timestamp()
    else:
        raise Rejected("bad_timestamp", f"timestamp of type {type(raw).__name__}")
    if ts - now > limits.max_future_s or now - ts > limits.max_past_s:
        raise Rejected("ts_out_of_range", f"timestamp {ts:.3f} too far from now")
    return ts


def finite_number(raw: object, max_abs: float) -> float:
    """A reading's value: a JSON number within ``[-max_abs, max_abs]`` (``ingest.max_abs_value``)."""
    # bool is an int in Python; a PLC sending true/false is not sending a measurement.
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise Rejected("not_a_number", f"value of type {type(raw).__name__}")
    try:
        value = float(raw)
    except OverflowError:  # ints beyond float range
        raise Rejected("non_finite", "value out of float range") from None
    if -max_abs <= value <= max_abs:  # also false for NaN
        return value
    raise out_of_range(value, max_abs)


def out_of_range(value: float, max_abs: float) -> Rejected:
    """The rejection for a value outside the physical range (or not finite at all)."""
    if not math.isfinite(value):
        return Rejected("non_finite", "NaN or infinite value")
    return Rejected("out_of_range", f"|value| {abs(value):.3g} > ingest.max_abs_value {max_abs:.3g}")
