"""Alarm priority: the one scale the config, alarms, metrics and the status page share.

Four levels, as ISA-18.2 / IEC 62682 recommend (three or four priorities, most alarms in the
lowest, few in the highest, so that "critical" keeps its meaning). Higher number, more urgent,
as in Ignition and OPC UA severities:

=========  =====  ==============================================================
name       value  meant for
=========  =====  ==============================================================
low        1      worth a look this shift (most learned-model anomalies)
medium     2      the default: an operator should look soon
high       3      act now: equipment at risk
critical   4      safety or large loss: act at once (e.g. a HiHi pressure limit)
=========  =====  ==============================================================

The config accepts the name or the number (``priority: high`` or ``priority: 3``).

>>> Priority.parse("High"), Priority.parse(4).name.lower()
(<Priority.HIGH: 3>, 'critical')
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer


class Priority(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: Any) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        raise ValueError(f"priority must be one of {', '.join(NAMES)} (or 1-4), not {value!r}")


NAMES = tuple(p.label for p in Priority)
DEFAULT = Priority.MEDIUM

# The pydantic field type: parsed from a name or a number, written back as the name.
PriorityField = Annotated[Priority, BeforeValidator(Priority.parse), PlainSerializer(lambda p: p.label, return_type=str)]
