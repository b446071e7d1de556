"""The JSON an alarm goes out as (the alarm topic), and strict JSON for every payload we send.

Every alarm message (``raised``, ``cleared``, ``accepted``) carries:

- ``alert_id``, ``gateway_id``, ``series``, ``state``, ``ts`` (the reading's), ``value``, ``seq``,
  ``message``; ``raised_alert_id`` on the end of an alarm, with ``held_s``;
- ``priority`` (1 low, 2 medium, 3 high, 4 critical: ``priority.py``) and ``priority_name``;
- ``source``: ``"model"`` (the learned model: ``score``, ``threshold``, ``model``, and on a
  raise ``kind``, ``direction``, ``expected``; ``peak_score`` on its end) or ``"limit"`` (an
  engineering limit: ``limit`` hihi / hi / lo / lolo, its ``setpoint``, ``kind: "limit"``,
  ``direction``, ``expected`` the range inside the limits);
- ``unit`` and ``description`` when the series' rules set them;
- ``acked`` on the end of an alarm (was it acknowledged before it ended), and
  ``after_shelve: true`` on a raise announced when a shelve ended (annunciator.py).
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

from edge_agent.priority import Priority

if TYPE_CHECKING:
    from edge_agent.pipeline import AlarmEvent

log = logging.getLogger(__name__)


def finite(x: float | None) -> float | None:
    """A float for a JSON payload: None rather than NaN or infinity (not JSON)."""
    return x if x is not None and math.isfinite(x) else None


def strict_json(doc: dict[str, Any]) -> bytes:
    """A payload as strict JSON (RFC 8259: no NaN or Infinity, which JavaScript and orjson
    refuse). Ingest bounds values to keep every score finite at the source; should a detector
    still produce a non-finite number, it goes out as null and is logged, rather than as
    invalid JSON or not at all."""
    try:
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return [clean(x) for x in v] if isinstance(v, list) else v

        log.error("payload for %r carries a non-finite number (sent as null): %r", doc.get("series"), doc)
        return json.dumps(clean(doc), separators=(",", ":"), allow_nan=False).encode()


def alarm_doc(ev: AlarmEvent, gateway_id: str, description: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "alert_id": ev.alert_id,
        "gateway_id": gateway_id,
        "series": ev.series,
        "state": ev.state,
        "ts": ev.ts,
        "value": ev.value,
        "priority": ev.priority,
        "priority_name": Priority(ev.priority).label,
        "source": ev.source,
    }
    if ev.source == "limit":
        doc["limit"] = ev.limit
        doc["setpoint"] = ev.setpoint
    else:
        doc["score"] = ev.score
        doc["threshold"] = ev.threshold
        doc["model"] = {"detector": ev.detector, "version": ev.version}
    if ev.unit:
        doc["unit"] = ev.unit
    if description:
        doc["description"] = description
    if ev.raised_alert_id:
        doc["raised_alert_id"] = ev.raised_alert_id
    if ev.kind is not None:
        doc["kind"] = ev.kind
        doc["direction"] = ev.direction
        doc["expected"] = {"low": finite(ev.expected_low), "high": finite(ev.expected_high)}
    if ev.held_s is not None:
        doc["held_s"] = round(ev.held_s, 3)
        if ev.source == "model":
            doc["peak_score"] = ev.peak_score
    doc["message"] = ev.message
    doc["seq"] = ev.seq
    return doc
