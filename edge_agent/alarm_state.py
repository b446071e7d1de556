"""The alarm decision of one series (or one machine): raise, hold, clear, accept. No I/O.

A score comes in with its threshold and timestamp; a transition may come out:

* ``RAISED`` when the score reaches the threshold and no alarm is raised;
* the alarm is **held** while the score stays at or above ``hold_ratio x threshold``
  (hysteresis): a fault that keeps the score near the threshold does not raise and clear on
  alternate readings, and an alarm clears only when the signal is well inside normal;
* ``CLEARED`` after ``clear_after`` consecutive readings below the hold level;
* ``ACCEPTED`` when an alarm has been held for ``accept_after_s`` seconds (reading time) and
  at least ``accept_min_readings`` readings: the deviation has lasted so long that it is taken
  as the new normal. The caller says so in its own message (distinct from a clear) and has the
  model re-learn normal from the current behaviour. ``accept_after_s: None`` never accepts:
  only an explicit act (a ``rebaseline`` or ``fit`` command) ends such an alarm.

Holding only works if the model's idea of normal does not follow the fault (a detector that
learns from every reading makes any lasting fault look normal within a few readings, and the
alarm clears while the machine is still faulty). That is the detector's part: see
``detectors/robust.py``, which stops learning from readings that score above the hold level.

The policy is passed to every ``update`` rather than stored per state, so one policy object
serves every series, and a per-series policy (issue 16) is a lookup in the caller.
Used by ``Pipeline`` per series; meant to be reused for machine-level models.

>>> policy = AlarmPolicy(hold_ratio=0.5, clear_after=2)
>>> state = AlarmState()
>>> [state.update(s, 1.0, t, policy) for t, s in enumerate([0.2, 1.5, 0.6, 0.4, 0.3, 0.1])]
[0, 1, 0, 0, 2, 0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NONE = 0
RAISED = 1
CLEARED = 2
ACCEPTED = 3
NAMES = {RAISED: "raised", CLEARED: "cleared", ACCEPTED: "accepted"}


@dataclass(frozen=True, slots=True)
class AlarmPolicy:
    hold_ratio: float = 0.7
    clear_after: int = 10
    accept_after_s: float | None = 7 * 86400.0
    accept_min_readings: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 < self.hold_ratio <= 1.0:
            raise ValueError(f"hold_ratio={self.hold_ratio!r}: must be in (0, 1]")
        if self.clear_after < 1:
            raise ValueError(f"clear_after={self.clear_after!r}: must be >= 1")
        if self.accept_after_s is not None and self.accept_after_s < 0:
            raise ValueError(f"accept_after_s={self.accept_after_s!r}: must be >= 0 or null")

    @classmethod
    def from_config(cls, alarms: Any) -> AlarmPolicy:
        """From ``AlarmConfig`` (config.py): the one place the alarm keys are read."""
        return cls(alarms.hold_ratio, alarms.clear_after, alarms.accept_after_s, alarms.accept_min_readings)


class AlarmState:
    """Raised or not, and what a raised alarm has seen so far."""

    __slots__ = ("active", "quiet", "raised_ts", "held", "peak")

    def __init__(self) -> None:
        self.active = False
        self.quiet = 0  # consecutive readings below the hold level while raised
        self.raised_ts: float | None = None
        self.held = 0  # readings since the raise
        self.peak = 0.0  # highest score / threshold since the raise

    def update(self, score: float, threshold: float, ts: float, policy: AlarmPolicy, normal: float = 0.0) -> int:
        """One reading's score; returns NONE, RAISED, CLEARED or ACCEPTED.

        ``normal`` is the score of an ordinary reading (0 for most detectors; about 0.5 for an
        isolation forest): the alarm is held while the score stays ``hold_ratio`` of the way
        from it to the threshold.
        """
        if not self.active:
            if score >= threshold:
                self.raise_at(ts, score / threshold if threshold > 0 else 0.0)
                return RAISED
            return NONE
        self.held += 1
        ratio = score / threshold if threshold > 0 else 0.0
        if ratio > self.peak:
            self.peak = ratio
        if score >= normal + policy.hold_ratio * (threshold - normal):
            self.quiet = 0
        else:
            self.quiet += 1
            if self.quiet >= policy.clear_after:
                self.end()
                return CLEARED
        accept = policy.accept_after_s
        if (accept is not None and self.held >= policy.accept_min_readings and self.raised_ts is not None
                and ts - self.raised_ts >= accept):
            self.end()
            return ACCEPTED
        return NONE

    def raise_at(self, ts: float, peak: float = 0.0) -> None:
        """Enter the raised state (a new raise, or an alarm restored after a restart)."""
        self.active = True
        self.quiet = 0
        self.raised_ts = ts
        self.held = 0
        self.peak = peak

    def end(self) -> None:
        """Leave the raised state (cleared, accepted, or ended by a command)."""
        self.active = False
        self.quiet = 0
        self.held = 0
