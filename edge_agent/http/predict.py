"""``POST /predict`` off the event loop: parsing, scoring and the answer, in one plain function.

A request with 100,000 values cost ~270 ms of event-loop time (JSON parsing, validation,
100,000 response objects, serialisation) and four clients repeating it pushed
reading-to-alarm latency to 0.1-0.8 s (issue 15, finding 10). A thread would not help
much: ``json.loads``, pydantic-core and the JSON encoder each hold the GIL for their whole
call, tens of milliseconds on such a body. So a body of ``OFFLOAD_BYTES`` or more goes to a
worker *process* (the HTTP port's side-work pool, which also draws plots, at low CPU
priority); the loop only hands it the raw bytes and the detector's copy, and writes the
finished JSON back. Smaller bodies are faster on the loop than a hop to the worker.

Everything here is a plain function of its arguments, importable by the worker.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from pydantic import ValidationError

from edge_agent.http.schemas import PredictBody

# Bodies of this many bytes or more are parsed, scored and answered in the worker. Measured
# with ``python -m bench.http_predict_loop`` (adaptive detector, best of 3-20): on the loop,
# 300 values (2.5 KB) 0.55 ms, 1,000 values (8.4 KB) 1.8 ms, 10,000 values 20 ms, 100,000
# values 221 ms; through the worker the loop's share (pickling the body and the answer) is
# 0.02 ms at 1,000 values and 0.7 ms at 100,000. 4 KB (~500 values) keeps any request's loop
# time near 1 ms, and a single value (the common case) off the worker round trip.
OFFLOAD_BYTES = 4 * 1024


class InvalidBody(Exception):
    """The body is not a valid ``PredictBody``: ``errors`` are pydantic's, made JSON-safe."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid predict body")
        self.errors = errors


def parse(raw: bytes) -> PredictBody:
    try:
        return PredictBody.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidBody(
            [{"loc": ["body", *map(str, e.get("loc", ()))], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in exc.errors()[:50]]
        ) from None


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def answer(raw: bytes, detector: Any, series_id: str, version: int) -> bytes:
    """Parse ``raw``, score its values with ``detector`` (a private copy), return the JSON
    answer (``PredictResult``). Raises ``InvalidBody`` or ``ValueError`` (value *and* values)."""
    body = parse(raw)
    if (body.value is None) == (body.values is None):
        raise ValueError("send exactly one of `value` or `values`")
    values = np.asarray([body.value] if body.values is None else body.values, dtype=np.float64)
    scores = np.asarray(detector.score_many(values), dtype=np.float64)
    threshold = float(detector.threshold)
    anomalous = scores >= threshold
    preds = [
        {"value": v, "score": _num(sc), "anomalous": a}
        for v, sc, a in zip(values.tolist(), scores.tolist(), anomalous.tolist(), strict=True)
    ]
    doc = {
        "series": series_id, "version": version, "detector": detector.name, "threshold": _num(threshold),
        "anomalous": bool(anomalous.any()), "predictions": preds,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def answer_or_error(raw: bytes, detector: Any, series_id: str, version: int) -> tuple[str, Any]:
    """``answer`` for the worker: ``("ok", json bytes)``, ``("invalid", errors)`` or
    ``("bad_request", message)``, so no exception has to cross the process boundary."""
    try:
        return "ok", answer(raw, detector, series_id, version)
    except InvalidBody as exc:
        return "invalid", exc.errors
    except ValueError as exc:
        return "bad_request", str(exc)
