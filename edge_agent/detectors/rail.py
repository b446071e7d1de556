"""The rail count's null: how often a series repeats its recent extreme, and when that is a fault.

A transmitter railed at a range limit (saturated, an ADC at full scale, a valve at its end stop)
caps the readings at one value: while the process hovers near that value, about half of the
readings repeat it exactly, but not in a row, so the stuck channel (runs of repeats) sees it only
when a run happens to be long. ``robust``'s rail count (see ``RobustDetector._step``) counts, per
side, the readings equal (within a quarter of a quantum) to the recent extreme, with a memory of
``MEMORY`` readings: the value that set the highest (lowest) reading stays the extreme while
readings keep coming back to it, and is replaced by a higher (lower) reading, by the next
reading once ``MEMORY`` readings have passed without a return to it, or by a lower (higher)
value that a reading returns to with none beyond it in between: the highest (lowest) reading
since the extreme's last return, or since the last repeat away from the extremes (session 10).
A rail caps the readings just below readings from before it; without that last rule those
stayed the extreme ~``MEMORY`` readings, and the rail's repeats meanwhile counted as a coarse
signal's (below) and shut the count ~150 readings more, by which time a process that moves
had often left the rail. On a continuous signal a value seldom comes back (within a quarter
of its smallest step) in normal operation, so the rule seldom acts there; where values do come
back, the window's own returns, counted by the same code, set the null.

What it assumes: in normal operation, readings return to their recent extreme independently and
at a rate the training window shows. The count over ``MEMORY`` readings is then about Poisson
with mean ``MEMORY x`` that rate; it raises at the smallest count whose Poisson probability is
within the detector's nuisance budget (``rate``), as the burst count does. The rate is the
window's own, per side (the larger of the two), and one hit more than the window had: a window
without a single return says the rate is small, not zero. On a continuous signal an exact repeat
has probability ~0, so the count raises at 5 of ~50 readings (rate 1e-6, a 500-reading window);
on a finely quantised signal, whose top value comes back now and then, its own window sets a
higher count. Where the quantum is not below half the noise (the test ``robust`` makes before it
fits a daily sinusoid) or the signal holds a value and jumps, the count is off: how often such a
signal returns to its top quantum depends on where its level sits between two quanta, not on its
noise (the burst count's argument), so no window gives it a null. On the scenario suite's
quantised wander (a quantum of twice the noise) the level's slow move under the top quantum took
its returns from the window's ~15 % to ~50 %: 98 nuisance alarms over suite seeds 0-3 with it on.

Written by hand: it is a few lines of arithmetic on the detector's own counts.
"""

from __future__ import annotations

import math

from edge_agent.detectors.robust_stats import poisson_at_least

MEMORY = 50.0  # readings: the count's memory and an extreme's lifetime without a return (the burst count's)
KEEP = 1.0 - 1.0 / MEMORY
TOL = 0.25  # a return to the extreme: within this fraction of the signal's quantum
RESOLVED = 0.5  # on only where the quantum is below this x the noise (see below)
CAP = 1.5  # the count stops at this x its limit (past it, more is no more evidence; the burst count's)


def rail_null(hits: int, readings: int, rate: float) -> tuple[float, float]:
    """The count's normal (its Poisson mean) and the count that raises, for a series whose
    training window of ``readings`` readings returned to one side's recent extreme ``hits``
    times (the larger side): the smallest n with P(N >= n) <= ``rate``.

    >>> rail_null(0, 500, 1e-6)
    (0.1, 5.0)
    """
    if readings <= 0:
        raise ValueError("rail_null needs a positive number of readings")
    mu = MEMORY * (hits + 1) / readings
    n = math.ceil(mu) + 1
    while poisson_at_least(mu, n) > rate and n < 10 * MEMORY:
        n += 1
    return mu, float(n)
