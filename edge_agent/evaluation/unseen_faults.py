"""Fault kinds the defaults were never chosen on: a check of how ``robust`` generalises.

The scenario suite (``scenarios.py``) has five fault kinds, and every default of ``robust`` was
chosen with them in view. The held-out data that judges the detectors has other plants and
other fault types, so a score on the suite's own kinds says little about those. This module
injects six more kinds of lasting fault, written down from what goes wrong on plant sensors
(not from what the detector sees), into the suite's normal signals:

* ``oscillation``: a sine of 3 ``U`` with a period of 16 readings (a hunting control loop, a
  loose mount);
* ``intermittent``: glitches of 6 ``u`` on 10 % of the readings (a loose connector);
* ``quieter``: the noise falls to 10 % of its size (a transmitter frozen with a dither, a
  filter switched on, an overridden value);
* ``dropout``: the reading is 0 (a lost signal);
* ``clip``: readings capped at the level they had (a transmitter railed at its range limit
  while the process hovers there);
* ``offset_noise``: a step of 3 ``U`` with the noise doubled (a failing sensor).

``u`` and ``U`` are the suite's (``scenarios.py``'s docstring). Each fault lasts 300 readings
and is scored as the suite scores a sustained fault: caught while it lasts, held to its end,
and any other raise a nuisance alarm. Run with ``edge-agent evaluate --scenarios unseen``.

Once a change to the detector is chosen while looking at these figures, they stop being
unseen: ``docs/detectors.md`` says which changes looked at them.
"""

from __future__ import annotations

import math

import numpy as np

from edge_agent.evaluation.scenarios import (
    SIZES,
    SUSTAINED_READINGS,
    Fault,
    Scenario,
    faulty_signal,
    grid,
)

UNSEEN_KINDS = ("oscillation", "intermittent", "quieter", "dropout", "clip", "offset_noise")
OSCILLATION_U = 3.0
OSCILLATION_PERIOD = 16  # readings
GLITCH_U = 6.0
GLITCH_SHARE = 0.1
QUIETER = 0.1
OFFSET_U = 3.0


def inject(x: np.ndarray, det: np.ndarray, kind: str, fault: Fault, u: float, big_u: float, rng: np.random.Generator) -> None:
    """Apply one unseen fault to x in place (det: the signal's deterministic part)."""
    s, e = fault.start, fault.end + 1
    n = e - s
    if kind == "oscillation":
        x[s:e] += OSCILLATION_U * big_u * np.sin(2 * math.pi * np.arange(n) / OSCILLATION_PERIOD)
    elif kind == "intermittent":
        hit = rng.random(n) < GLITCH_SHARE
        x[s:e] += np.where(hit, GLITCH_U * u * rng.choice([-1.0, 1.0], n), 0.0)
    elif kind == "quieter":
        x[s:e] = det[s:e] + (x[s:e] - det[s:e]) * QUIETER
    elif kind == "dropout":
        x[s:e] = 0.0
    elif kind == "clip":
        x[s:e] = np.minimum(x[s:e], float(np.median(x[s - 50:s])))
    elif kind == "offset_noise":
        x[s:e] += OFFSET_U * big_u + rng.normal(0.0, u, n)
    else:
        raise ValueError(f"unknown unseen fault kind {kind!r}")


def build_suite(train: int = 500, seed: int = 0) -> list[Scenario]:
    """Every unseen kind on every normal kind, noise level and sampling interval of the full
    suite, twice; one fault per scenario, 300-500 readings after the training window."""
    spec = SIZES["full"]
    out: list[Scenario] = []
    k = 0
    for rep, normal, sigma, dt in grid(spec):
        for kind in UNSEEN_KINDS:
            # A stream apart from the suite's ([seed, rep, k]): its signals are new too.
            rng = np.random.default_rng([seed, 99, rep, k])
            k += 1
            n = train + spec.fault_length
            x, det, u, big_u, first = faulty_signal(normal, sigma, dt, train, spec.fault_length, rng)
            fault = Fault(kind, first, first + SUSTAINED_READINGS - 1)
            inject(x, det, kind, fault, u, big_u, rng)
            ts = 1.7e9 + np.arange(n) * dt
            out.append(Scenario(f"{normal}/{kind}/s{sigma:g}/dt{dt:g}/r{rep}", normal, sigma, dt, x, ts, [fault]))
    return out
