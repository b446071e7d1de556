"""The lattice count: steps finer than the resolution the training window showed.

A quantised transmitter (an ADC's counts, a value sent with a fixed number of decimals) can only
report values on its lattice, so every step it makes is a whole number of quanta. When the
window's steps all are, a step well under one quantum is no reading that transmitter made: the
value now comes from something else (a filter or a smoothing block switched in downstream, a
value overridden or substituted, a simulated signal). ``robust``'s lattice count (see
``RobustDetector._step``) counts such steps, a step finer than ``FINER`` x the window's quantum,
with a memory of ``MEMORY`` readings (the rail count's and the burst count's).

Why not the noise fallen quiet, which is what such a fault usually looks like: on a quantised
signal the quiet side's recent E|dx| cannot go below one quantum (noise finer than the
resolution is not measurable), so it sees the quiet only once the slow cycle has learned the
finer steps as the new resolution, and then the quiet statistic rises over ~100 readings, slowly
enough that its own tail learns it as it rises (docs/detectors.md, "A quiet period on a quantised
signal"). Why not the share of repeats (a frozen transmitter's dither repeats its value): where
the quiet comes from downstream of the quantiser the values shrink with the noise and repeat as
often as before (the unseen suite's ``quieter`` on its quantised signal: 0.45 of steps zero
before the fault and 0.46 during it, its steps a tenth of a quantum).

What it assumes: in normal operation the steps stay on the window's lattice. The window has no
step under its quantum by construction (the quantum is its smallest step), so its null is the
rail count's for a window without a single hit (a rate of one in the window's length: 5 of ~50
readings at ``rate`` 1e-6 and a 500-reading window). The count is off where the window shows no
lattice (fewer than ``MIN_STEPS`` nonzero steps, or some of them not a whole number of quanta:
a continuous signal's smallest step says nothing of the next) and on a signal that holds a value
and jumps (SKAB's flow meter: its jitter of 0.001-0.03 under jumps of ~1 is routine). A shifted
lattice (a step fault, an offset) keeps its steps whole quanta, so only the step into it counts.
"""

from __future__ import annotations

import numpy as np

MEMORY = 50.0  # readings (the rail count's and the burst count's)
KEEP = 1.0 - 1.0 / MEMORY
FINER = 0.4  # a step under this x the window's quantum is off its lattice (half a quantum is not: a lattice of q / 2 the window did not show)
WHOLE = 0.1  # a window's step is a whole number of quanta within this fraction of one
MIN_STEPS = 20  # nonzero steps a window needs to show its lattice
CAP = 1.5  # the count stops at this x its limit (the rail count's)


def shows_lattice(d: np.ndarray, quantum: float) -> bool:
    """Whether the absolute first differences ``d`` of a window show a lattice of ``quantum``:
    at least ``MIN_STEPS`` nonzero steps, every one a whole number of quanta.

    >>> shows_lattice(np.array([0.0, 0.1, 0.2, 0.3] * 10), 0.1)
    True
    >>> shows_lattice(np.array([0.0, 0.1, 0.25, 0.3] * 10), 0.1)
    False
    """
    if quantum <= 0.0:
        return False
    nz = d[d > 0.0]
    if nz.size < MIN_STEPS:
        return False
    with np.errstate(over="ignore", invalid="ignore"):  # (a step of 1e15 quanta or more is no whole number: nan, False)
        nz = nz / quantum
        return bool(np.all(np.abs(nz - np.round(nz)) <= WHOLE))
