"""``number``: the payload is a plain decimal number, e.g. ``21.5``. Time is the receive time."""

from __future__ import annotations

import math
from typing import Any

from edge_agent.payloads.common import Rejected, TsLimits


def decode(payload: bytes, now: float, opts: Any, limits: TsLimits) -> tuple[float, float]:
    if not payload:
        raise Rejected("empty")
    if len(payload) > 64:
        raise Rejected("not_a_number", "too long for a number")
    try:
        value = float(payload)
    except ValueError:
        raise Rejected("not_a_number", "not a decimal number") from None
    if not math.isfinite(value):
        raise Rejected("non_finite", "NaN or infinite value")
    return value, now
