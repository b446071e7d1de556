"""The text of a machine alarm: the sensors that explain it, as an operator says it.

"current high, flow low: current 10.9 (expected 10.1), flow 88.2 (expected 95) (score 1.4 x
threshold)" rather than a number. The sensors named are the fewest, in rank order, that carry
``NAMED_SHARE`` of the score's squared deviations (``Contribution.part``), at most
``MAX_NAMED``, each deviating by at least one normal spread (a sensor within its noise
explains nothing). The payload's ``sensors`` list has every sensor; this line has the ones
to look at. Clears and acceptances are worded as a series' are (``alarm_message.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_agent.alarm_message import accepted, cleared, number
from edge_agent.machine_detectors import Contribution

NAMED_SHARE = 0.8
MAX_NAMED = 3

__all__ = ["accepted", "cleared", "named", "raised"]


def named(sensors: Sequence[Contribution]) -> list[Contribution]:
    """The sensors that explain a machine score (``sensors`` ranked, as ``contributions()``).

    >>> c = lambda s, z, part: Contribution(s, 0.0, 0.0, 0.0, z, part)
    >>> [x.sensor for x in named([c("current", 5.5, 0.7), c("flow", -2.7, 0.17), c("pressure", 1.9, 0.08)])]
    ['current', 'flow']
    >>> [x.sensor for x in named([c("flow", -7.0, 0.96), c("current", 0.9, 0.02)])]
    ['flow']
    """
    out: list[Contribution] = []
    share = 0.0
    for c in sensors:
        if len(out) >= MAX_NAMED or share >= NAMED_SHARE or abs(c.z) < 1.0:
            break
        out.append(c)
        share += c.part
    return out or list(sensors[:1])


def raised(sensors: Sequence[Contribution], score: float, threshold: float) -> str:
    """``current high, flow low: current 10.9 (expected 10.1), flow 88.2 (expected 95) (score 1.4 x threshold)``

    >>> raised([Contribution("current", 10.9, 10.1, 0.7, 6.1, 0.6), Contribution("flow", 88.2, 95.0, -6.3, -5.2, 0.38)], 1.42, 1.0)
    'current high, flow low: current 10.9 (expected 10.1), flow 88.2 (expected 95) (score 1.4 x threshold)'
    """
    ratio = f"score {score / threshold:.2g} x threshold" if threshold > 0 else f"score {score:.3g}"
    top = named(sensors)
    if not top:
        return ratio
    what = ", ".join(f"{c.sensor} {c.what}" for c in top)
    detail = ", ".join(f"{c.sensor} {number(c.value)} (expected {number(c.expected)})" for c in top)
    return f"{what}: {detail} ({ratio})"
