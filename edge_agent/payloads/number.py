"""``number``: the payload is a plain decimal number, e.g. ``21.5``. Time is the receive time."""

from __future__ import annotations

from typing import Any

from edge_agent.payloads.common import Rejected, TsLimits, out_of_range


def decode(payload: bytes, now: float, opts: Any, limits: TsLimits) -> tuple[float, float]:
    if not payload:
        raise Rejected("empty")
    if len(payload) > 64:
        raise Rejected("not_a_number", "too long for a number")
    try:
        value = float(payload)
    except ValueError:
        raise Rejected("not_a_number", "not a decimal number") from None
    max_abs = opts.max_abs
    if -max_abs <= value <= max_abs:  # also false for NaN
        return value, now
    raise out_of_range(value, max_abs)
