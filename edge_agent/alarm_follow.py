"""A move an operator accepted, followed while it lasts.

An operator who accepts a level shift or a drift with ``rebaseline`` says "this move is normal".
Plant moves are often ramped: a load change over two hours, a setpoint ramped by the
controller. Accepted halfway, the move goes on, and the model of normal, set at the level of
the moment, raised the same alarm again a few readings later, and again after the next
acceptance: on a weekday load ramped down to a weekend's over two hours, an operator accepting
each alarm 30 readings after its raise saw 4 raises per ramp (``scripts/plant_normals_probe.py
--only weekly --accept-after 30``: 33 over four seeds of 8.7 days).

So, after an operator's ``rebaseline`` of a raised level shift, drift or out-of-range alarm
(not the acceptance time's: a move still under way after days is not a ramp), a raise of one
of those kinds **in the same direction** within ``alarms.follow_readings`` readings of the last
acceptance is the accepted move going on: it is accepted again in place (the model of normal
takes the level of the moment) instead of raised, logged as a notice and counted
(``edge_agent_alarms_followed_total``). The move's end is accepted once too: a ramp that
stops is a drift the other way against the course followed (3 of 6 seeded ramps raised it),
so a drift raised the other way ends the following, accepted in place. Anything else raises
as usual: a level shift or out-of-range the other way, a spike, variance, a stuck sensor, and
any raise once the move has ended or been quiet for ``follow_readings`` readings (a reversal
first seen as a drift is accepted as the end, then raised as it moves on from there). However
long it goes on, the following ends ``FOLLOW_SPAN`` x ``follow_readings`` readings after the
operator's act, so an accepted move that turns into a runaway is alarmed again. ``follow_readings: 0`` turns it off. A new model
(a fit, a rollback, a model pulled from S3) and a rebaseline of a series not in alarm end the
following. The state is not kept across a restart (a restart mid-ramp raises once more; the
operator accepts again).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edge_agent.detectors.base import DRIFT, LEVEL_SHIFT, OUT_OF_RANGE, Explanation

if TYPE_CHECKING:
    from edge_agent.pipeline import Pipeline
    from edge_agent.series import Series

FOLLOWED_KINDS = (LEVEL_SHIFT, DRIFT, OUT_OF_RANGE)  # what a ramped move raises as it goes on
FOLLOW_SPAN = 10  # the following ends this x follow_readings after the operator's act


def start(p: Pipeline, s: Series, exp: Explanation | None, by: str) -> str | None:
    """An operator accepted ``s``'s raised alarm, explained as ``exp``: follow its move if it
    is one. Returns what the accepted message adds, or None."""
    w = p.follow_readings
    if w <= 0 or exp is None or exp.kind not in FOLLOWED_KINDS or exp.direction is None:
        s.follow = None
        return None
    n = s.n_readings
    s.follow = (exp.direction, n + w, n + FOLLOW_SPAN * w, by)
    return f"; a move {exp.direction} that goes on is followed for up to {FOLLOW_SPAN * w} readings"


def in_force(s: Series) -> tuple[str, int, int, str] | None:
    """``s.follow`` (direction, until reading, last reading, by whom) while it still holds."""
    f = s.follow
    if f is None or s.n_readings > f[1] or s.n_readings > f[2]:
        return None
    return f


def goes_on(p: Pipeline, s: Series, exp: Explanation | None) -> bool:
    """A raise about to be sent for ``s``: True if it is the accepted move going on (the caller
    accepts it in place instead). Clears the following once it has ended."""
    f = in_force(s)
    if f is None:
        s.follow = None
        return False
    if exp is None or exp.kind not in FOLLOWED_KINDS or exp.direction is None:
        return False
    direction, _, end, by = f
    if exp.direction == direction:
        p.n_followed += 1
        s.follow = (direction, s.n_readings + p.follow_readings, end, by)
        p.notice_log.log(
            logging.INFO, "series %s still moving %s after the rebaseline by %s (%s, value %.6g): followed, not raised; "
            "it is alarmed again if it moves on after %d quiet readings or after reading %d",
            s.id, direction, by, exp.kind, s.last_value, p.follow_readings, end,
        )
        return True
    if exp.kind == DRIFT:
        # The course turned back: a ramp that stops is a drift the other way against the
        # course the model followed. Its end, accepted once; what moves on from here is alarmed.
        p.n_followed += 1
        s.follow = None
        p.notice_log.log(logging.INFO, "series %s settled after the move %s the rebaseline by %s accepted (value %.6g): "
                         "followed to its end; alarmed as usual from here", s.id, direction, by, s.last_value)
        return True
    return False
