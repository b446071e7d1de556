"""Discrete-state signals: a pump's run status, a valve's position code, a mode selector.

A plant gateway's topics carry status points as well as measurements: 0 / 1 for a pump
stopped or running, 1 / 2 for a valve closed or open (0 while it travels), a mode code. Such a
signal holds one of a few values and jumps between them whenever the process says so. None of
``robust``'s channels means anything there: a switch is not a spike (it is the signal's whole
way of moving), a long dwell in one state is not a level shift (the "level" of a 0 / 1 signal
is its recent duty cycle), and how long a pump stays off is not "stuck". Scored as a
measurement, a 0 / 1 status whose states last a few hundred readings raised 30 alarms over four
series of 12,500 readings (switches as spikes, dwells as level shifts and drifts); what an
operator wants from such a point is to hear when it takes a value it never takes.

So where the training window is a state signal (``discrete_states``), the fitted model scores
each reading by whether it is one of the window's states: one of them scores 0, any other value
scores past the threshold (by its distance to the nearest state, in units of the states' span,
at most twice the threshold) and is explained as out of range. Accepting an alarm
(``rebaseline``: the ``rebaseline`` command, or ``alarms.accept_after_s``) adds the value to
the states.

The test is strict, so that a measurement is never taken for a status (docs/detectors.md,
"Status and mode signals, a window that never moved, and gaps"):

* the window takes 2 to ``MAX_STATES`` distinct values;
* 9 steps in 10 repeat the value before (the signal dwells: the suite's quantised wander at 5
  noise widths, 10 / 20 / 30 flipping at a quantum's boundary on half its steps, is a
  measurement, and at a threshold of one half it was taken for a status);
* each value is held for two readings or more (NAB's disk write bytes, 0 for hours, then
  2025060 and 2423190 once each, is an idle measurement);
* the values span at least half their largest magnitude: what tells a status from a
  measurement resolved coarsely (a temperature read in whole degrees that sat at 20 and 21
  during the window spans 1 against 21, and its next degree is no fault; 0 / 1, 1 / 2 / 3 or
  4 / 20 mA span their own size).

How: the fitted ``RobustDetector`` keeps the window's states in ``states`` (empty for a
measurement) and hands a state signal's scoring, explanation, band and acceptance to the
functions here (one test of ``states`` a reading). Written by hand: a few lines of arithmetic on
the window's values. (Until session 16 the model changed its class to a subclass here; a class
compiled by mypyc, see ``native.py``, cannot.)

>>> import numpy as np
>>> from edge_agent.detectors.robust import RobustDetector
>>> status = np.repeat([0.0, 1.0, 0.0, 1.0], [200, 150, 100, 50])
>>> d = RobustDetector()
>>> _ = d.fit(status)
>>> d.states
(0.0, 1.0)
>>> d.score_one(1.0) < d.threshold
True
>>> d.score_one(0.5) >= d.threshold
True
>>> d.explain(0.5).kind
'out_of_range'
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.detectors import base

MAX_STATES = 4  # a status or mode signal takes at most this many values in its window
MIN_DWELL = 0.9  # ... and repeats the value before in at least this share of its steps (a visit ~10 readings or more)
MIN_SPAN = 0.5  # ... and its values span at least this share of their largest magnitude
MAX_KEPT = 32  # states kept, with those accepted later (rebaseline); the oldest go first


def discrete_states(v: np.ndarray) -> tuple[float, ...]:
    """The states of a training window that is a status or mode signal, else ()."""
    values = np.unique(v)
    if not 2 <= values.size <= MAX_STATES or v.shape[0] < 10:
        return ()
    lo, hi = float(values[0]), float(values[-1])
    if hi - lo < MIN_SPAN * max(abs(lo), abs(hi)):
        return ()  # a measurement resolved coarsely (whole degrees sitting at 20 and 21)
    held = np.diff(v) == 0.0
    if np.count_nonzero(held) < MIN_DWELL * (v.shape[0] - 1):
        return ()  # it moves too often: a measurement on a lattice, its level near a boundary
    if np.unique(v[1:][held]).size < values.size:
        return ()  # a value it never held: a measurement idle at one value, with rare readings off it
    return tuple(float(s) for s in values)


def state_score(states: tuple[float, ...], threshold: float, x: float) -> float:
    """A reading of a state signal: 0 at one of its states, else past ``threshold`` by its
    distance to the nearest state, a span or more at most (how far beyond says nothing more on a
    status point, and a subnormal span must not make it inf)."""
    span = states[-1] - states[0]
    far = min(abs(x - s) for s in states)
    if far <= 1e-9 * span:
        return 0.0
    return threshold * (2.0 if far >= span else 1.0 + far / span)


def state_explain(states: tuple[float, ...], x: float) -> base.Explanation:
    lo, hi = states[0], states[-1]
    direction = "up" if x > hi else "down" if x < lo else None
    shown = ", ".join(f"{s:.6g}" for s in states)
    return base.Explanation(base.OUT_OF_RANGE, direction, lo, hi,
                            f"{x:.6g} is none of the values this status signal takes ({shown})")


def accept_state(states: tuple[float, ...], x: float) -> tuple[float, ...]:
    """The states with ``x`` accepted as one more (``rebaseline``), the oldest dropped past MAX_KEPT."""
    if any(x == s for s in states):
        return states
    return tuple(sorted((*states, x))[-MAX_KEPT:])


def stored_states(params: dict[str, Any]) -> tuple[float, ...]:
    """The states of a stored model (a model stored before them has none)."""
    raw = params.get("states") or []
    if not isinstance(raw, list) or len(raw) > MAX_KEPT:
        raise ValueError(f"state states: expected a list of at most {MAX_KEPT} numbers")
    states = tuple(sorted(float(s) for s in raw))
    if states and (len(states) < 2 or not all(np.isfinite(states)) or states[-1] <= states[0]):
        raise ValueError("state states: expected two or more distinct finite numbers")
    return states
