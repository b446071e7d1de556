"""A detector's notices: what an operator should know about a series that is not an alarm.

A detector may set ``notice`` (``detectors/base.py``): robust does when a series moves to an
operating level an operator accepted with ``rebaseline`` (or that its training window held), a
move it scores as normal and so never alarms. Without a line saying so, a series that sat at an
accepted idle level after a fault there would look unwatched. The pipeline looks every few
readings (``take`` is on its every-8th-reading path, after a gap and after a batch), so a
notice costs the calm path nothing; here it is logged, at most one line a second across all
series (the rest counted into the next line), and counted for ``/metrics``
(``edge_agent_detector_notices_total``).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from edge_agent.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 1.0  # a plant whose setpoints all move at once logs one line a second, not one a series


class Counted(Protocol):
    n_notices: int
    notice_log: RateLimitedLog


def take(p: Counted, series_id: str, det: Any) -> None:
    """Log and count ``det.notice`` (not None) for ``series_id``, and clear it."""
    text, det.notice = det.notice, None
    p.n_notices += 1
    p.notice_log.log(logging.INFO, "series %s %s", series_id, text)


def new_log() -> RateLimitedLog:
    return RateLimitedLog(log, LOG_INTERVAL_S)
