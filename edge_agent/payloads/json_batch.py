"""``json_batch``: many readings of one series in one message, scored vectorised.

Either ``{"values": [...], "timestamps": [...]}`` or
``{"values": [...], "start": <ts>, "interval_ms": <ms>}``; without either, every reading gets
the receive time. Non-finite values, and values beyond ``ingest.max_abs_value``, are dropped
one by one (and counted by reason), not the batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.payloads.common import Rejected, TsLimits, parse_ts
from edge_agent.payloads.json_object import loads_object


def _numbers(raw: object, what: str) -> np.ndarray:
    if not isinstance(raw, list):
        raise Rejected("bad_batch", f"{what} is not a list")
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise Rejected("not_a_number", f"{what} holds a {type(v).__name__}")
    try:
        return np.asarray(raw, dtype=np.float64)
    except OverflowError:
        raise Rejected("non_finite", f"{what} holds a number out of float range") from None


def decode(payload: bytes, now: float, opts: Any, limits: TsLimits) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Returns values, timestamps and how many values were dropped, by reason."""
    doc = loads_object(payload)
    values = _numbers(doc.get("values"), "values")
    n = values.shape[0]
    if n == 0:
        raise Rejected("empty", "no values")
    if n > opts.max_batch:
        raise Rejected("batch_too_large", f"{n} values > {opts.max_batch}")
    if "timestamps" in doc:
        raw = doc["timestamps"]
        if not isinstance(raw, list) or len(raw) != n:
            raise Rejected("bad_batch", "timestamps do not pair with values")
        ts = np.fromiter((parse_ts(t, opts.ts_unit, now, limits) for t in raw), dtype=np.float64, count=n)
    elif "start" in doc:
        start = parse_ts(doc["start"], opts.ts_unit, now, limits)
        interval = doc.get("interval_ms")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not (0 <= interval < 1e12):
            raise Rejected("bad_batch", "interval_ms must be a non-negative number")
        ts = start + np.arange(n, dtype=np.float64) * (float(interval) / 1000.0)
        if ts[-1] - now > limits.max_future_s:
            raise Rejected("ts_out_of_range", "batch runs too far into the future")
    else:
        ts = np.full(n, now, dtype=np.float64)
    keep = np.abs(values) <= opts.max_abs  # False for NaN too
    dropped: dict[str, int] = {}
    if not keep.all():
        non_finite = int(n - np.isfinite(values).sum())
        if non_finite:
            dropped["non_finite"] = non_finite
        if n - non_finite - int(keep.sum()):
            dropped["out_of_range"] = n - non_finite - int(keep.sum())
        values, ts = values[keep], ts[keep]
        if values.shape[0] == 0:
            raise Rejected("non_finite" if non_finite == n else "out_of_range", "no value in the batch is finite and within ingest.max_abs_value")
    return values, ts, dropped
