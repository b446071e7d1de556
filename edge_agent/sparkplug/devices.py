"""What the agent's edge node declares: which device a series belongs to, and its metrics.

One Sparkplug *device* per group of series sharing their first ``sparkplug.device_segments``
segments (default 1: ``m1/temp`` and ``m1/vibration`` are device ``m1``, the machine), with
each series' metrics in a folder named by the rest of its id (``temp/Anomaly Score``). Why not
one device per series: SCADA shows devices as the plant's machines, and a gateway with
thousands of series would publish thousands of DBIRTHs at every reconnect. Why not one device
for all: a DBIRTH must declare every metric of its device, so it would grow without bound
(about 250 bytes per series here: a device of 1,000 series is a 250 KB DBIRTH; choose
``device_segments`` so devices stay well inside the broker's packet limit).

Per series, in this order (``SERIES_METRICS``): anomaly score, alarm, alarm id, threshold,
model version, state; then the alarm event's optional fields where ``AlarmEvent`` has them
(``OPTIONAL_EVENT_FIELDS``: the alarm ``kind`` and ``priority`` other work adds to alarm
events). Every metric has an alias, unique in the edge node, stable for the process.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from edge_agent.pipeline import AlarmEvent
from edge_agent.series import Series
from edge_agent.sparkplug.schema import DataType

_DEVICE_UNSAFE = {ord(c): f"%{ord(c):02X}" for c in "%+#/:\x00"}


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


# (metric name suffix, datatype, value from the series and its last alarm event)
Getter = Callable[[Series, "AlarmEvent | None"], Any]
SERIES_METRICS: list[tuple[str, int, Getter]] = [
    ("Anomaly Score", DataType.Double, lambda s, ev: _finite(s.last_score)),
    ("Alarm", DataType.Boolean, lambda s, ev: s.active),
    ("Alarm Id", DataType.String, lambda s, ev: s.raised_id if s.active else None),
    ("Threshold", DataType.Double, lambda s, ev: _finite(float(s.model.detector.threshold)) if s.model is not None else None),
    ("Model Version", DataType.Int64, lambda s, ev: s.model.version if s.model is not None else None),
    ("State", DataType.String, lambda s, ev: s.state),
]
# Alarm event fields published where AlarmEvent has them: (event field, metric suffix, datatype).
OPTIONAL_EVENT_FIELDS = [("kind", "Alarm Kind", DataType.String), ("priority", "Alarm Priority", DataType.Int64)]
_EVENT_FIELDS = {f.name for f in dataclasses.fields(AlarmEvent)}
for _field, _suffix, _dt in OPTIONAL_EVENT_FIELDS:
    if _field in _EVENT_FIELDS:
        SERIES_METRICS.append((_suffix, _dt, lambda s, ev, f=_field: getattr(ev, f, None) if ev is not None else None))
SCORE = 0  # index of the anomaly score in SERIES_METRICS
ALIAS_STRIDE = 16  # aliases per series (room for the optional fields to come)
FIRST_SERIES_ALIAS = 1000  # node metrics use aliases below


def device_of(series_id: str, segments: int) -> tuple[str, str]:
    """(device id, metric folder) of a series: ``m1/temp`` -> (``m1``, ``temp/``)."""
    parts = series_id.split("/")
    head, rest = parts[:segments], [p for p in parts[segments:] if p]
    device = ":".join(p.translate(_DEVICE_UNSAFE) for p in head) or "_"
    return device, "".join(p + "/" for p in rest)


def values(s: Series, ev: AlarmEvent | None) -> tuple[Any, ...]:
    return tuple(get(s, ev) for _, _, get in SERIES_METRICS)


class Catalogue:
    """Series -> (device, folder, alias base), assigned once per series for the process."""

    def __init__(self, segments: int) -> None:
        self.segments = segments
        self.where: dict[str, tuple[str, str, int]] = {}

    def place(self, series_id: str) -> tuple[str, str, int]:
        w = self.where.get(series_id)
        if w is None:
            device, folder = device_of(series_id, self.segments)
            w = self.where[series_id] = (device, folder, FIRST_SERIES_ALIAS + ALIAS_STRIDE * len(self.where))
        return w
