"""Bounds on the detector parameters that decide what a fit costs.

A fit runs in the agent's one worker process, and every other series' fit waits behind it:
``n_estimators=20000`` took 23 s and a 612 MB worker (issue 15, finding 11; 36 s and 688 MB
maxrss on the 2-core test machine). The parameters that scale a fit's time or memory are
bounded here, in one visible table, and checked wherever parameters enter: the config file
(``detector.params``, at load), the ``fit`` command and ``POST /fit`` (both through
``Agent.fit_series``). A value outside its bounds is refused with a message naming the
parameter and the bounds; nothing is clamped silently.

Measured on the test machine (``isolation_forest``, 4,096 readings, worker maxrss including
~235 MB of imports): defaults (100 trees, 256 samples) 1.8 s; 1,000 x 256: 2.2 s, 250 MB;
1,000 x 4,096: 3.6 s, 416 MB; 1,000 x 4,096 with window 1,024 on 100,000 readings: 11.4 s,
431 MB. So the largest fit the bounds allow costs ~+200 MB over an idle worker and seconds,
not minutes; ``detector.fit_timeout_s`` bounds whatever is left (e.g. a huge training set).

Parameters of other detectors (thresholds, smoothing factors) do not change what a fit costs;
their own constructors check their ranges.
"""

from __future__ import annotations

from typing import Any

from edge_agent.detectors.params import ParamProblems

# detector name -> parameter -> (lowest, highest), inclusive.
BOUNDS: dict[str, dict[str, tuple[int, int]]] = {
    "isolation_forest": {
        "n_estimators": (1, 1000),
        "max_samples": (2, 4096),
        "window": (2, 1024),
    },
}


def check_fit_params(detector: str, params: dict[str, Any] | None) -> None:
    """Raise ``ParamProblems`` (a ValueError, reported under ``detector.params.<name>`` in a
    config) naming the first parameter outside its bounds."""
    bounds = BOUNDS.get(detector)
    if not bounds or not params:
        return
    for name, (lo, hi) in bounds.items():
        if name not in params:
            continue
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ParamProblems(detector, [(name, f"detector {detector!r}: {name}={value!r} is outside its bounds [{lo}, {hi}] (see edge_agent/fit_bounds.py)")])

