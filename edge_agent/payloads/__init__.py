"""Payload formats: each module decodes one wire format into readings.

Registered here, in one visible place. A decoder takes the raw payload, the receive time and
the subscription's options, and returns ``(value, ts)`` for a single reading,
``(values, timestamps, n_dropped)`` numpy arrays for a batch, or, for the formats in
``MULTI_VALUE``, ``([(sensor, value), ...], ts, [(sensor, reason, detail), ...])``: several
named readings of one moment (one machine's row). Bad input raises ``Rejected`` with a
short, stable reason code that is counted and logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_agent.payloads import json_batch, json_multi, json_object, number
from edge_agent.payloads.common import Rejected, TsLimits

Decoder = Callable[[bytes, float, Any, TsLimits], Any]

# name -> (decoder, is_batch)
FORMATS: dict[str, tuple[Decoder, bool]] = {
    "number": (number.decode, False),
    "json": (json_object.decode, False),
    "json_batch": (json_batch.decode, True),
    "json_multi": (json_multi.decode, False),
}

# Formats whose decoder returns several named readings of one moment (see above).
MULTI_VALUE: frozenset[str] = frozenset({"json_multi"})

__all__ = ["FORMATS", "MULTI_VALUE", "Rejected", "TsLimits"]
