"""A simulated pump whose sensors move together, and a fault that breaks how they relate.

The pump's five sensors follow one common **load** (how hard it is driven), which wanders
smoothly within a fixed range: flow and current rise and fall together, pressure with the
square of the flow, vibration a little with the load, the motor temperature with the load
after a thermal lag. Each sensor's *normal band* is what the load's range gives it.

``relation_break`` is the fault per-sensor monitoring cannot see: current rises while flow
falls (an impeller clogging, a pump running against a closing valve), each by about a
fifth of its band, ramped in over 10 s and **kept inside its own normal band** (saturating
smoothly before its edge), so no sensor leaves the range it shows in normal operation, nor
moves in a way it does not in normal operation; only their relation is wrong. It lasts
``duration_s`` and is then restored. A broken sensor keeps its noise: an earlier version
clipped the noisy value at the band's margin, so a sensor pushed there repeated one exact
value for up to 18 readings, a stuck transmitter, which the per-series ``robust`` detector
rightly reported as ``stuck``.

No I/O here: ``simulator.py`` publishes what ``Pump.step`` returns.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

SENSORS = ("flow", "pressure", "current", "vibration", "temperature")
LOAD_MIN, LOAD_MAX = 0.55, 0.95
BREAK_FRACTION = 0.2  # of each sensor's band
BREAK_RAMP_S = 10.0
MARGIN = 0.05  # a broken value stays this share of its band inside the band
SOFT = 0.1  # ... approaching that limit smoothly over this share of the band


@dataclass
class Pump:
    machine: str
    flow0: float = 120.0  # l/min at full load
    pressure0: float = 4.0  # bar at full load
    current0: float = 12.0  # A at full load
    vibration0: float = 2.0  # mm/s at full load
    temp0: float = 45.0  # degC at no load
    phases: tuple[float, float, float] = (0.0, 1.0, 2.0)
    temp_lag_s: float = 120.0
    duration_s: float = 60.0
    temp_state: float | None = None
    break_start: float = math.inf
    break_end: float = -math.inf
    faults: list[dict] = field(default_factory=list)

    @classmethod
    def random(cls, machine: str, rng: random.Random) -> Pump:
        s = rng.uniform(0.9, 1.1)
        return cls(machine, flow0=120 * s, pressure0=4 * s, current0=12 * s, vibration0=2 * s, temp0=rng.uniform(40, 50),
                   phases=(rng.uniform(0, 6.28), rng.uniform(0, 6.28), rng.uniform(0, 6.28)))

    def load(self, t: float) -> float:
        """Smooth, bounded wander between LOAD_MIN and LOAD_MAX (periods of 3 min, 67 s, 23 s)."""
        a, b, c = self.phases
        w = 0.55 * math.sin(2 * math.pi * t / 180 + a) + 0.3 * math.sin(2 * math.pi * t / 67 + b) + 0.15 * math.sin(2 * math.pi * t / 23 + c)
        return (LOAD_MIN + LOAD_MAX) / 2 + (LOAD_MAX - LOAD_MIN) / 2 * w

    def ideal(self, load: float) -> dict[str, float]:
        return {
            "flow": self.flow0 * load,
            "pressure": self.pressure0 * load * load,
            "current": self.current0 * (0.35 + 0.65 * load),
            "vibration": self.vibration0 * (0.6 + 0.4 * load),
        }

    def band(self, sensor: str) -> tuple[float, float]:
        """The sensor's normal range (flow, pressure, current, vibration: over the load's range)."""
        lo, hi = self.ideal(LOAD_MIN)[sensor], self.ideal(LOAD_MAX)[sensor]
        return (min(lo, hi), max(lo, hi))

    def noise(self) -> dict[str, float]:
        return {"flow": 0.003 * self.flow0, "pressure": 0.004 * self.pressure0, "current": 0.003 * self.current0,
                "vibration": 0.02 * self.vibration0, "temperature": 0.05}

    def breaking(self, t: float) -> float:
        """How far into a relation break (0 = none, 1 = fully broken)."""
        if not self.break_start <= t < self.break_end:
            return 0.0
        return min(1.0, (t - self.break_start) / BREAK_RAMP_S)

    def step(self, t: float, dt: float, rng: random.Random, fault_p: float, allow_faults: bool) -> tuple[dict[str, float], dict | None]:
        load = self.load(t)
        values = self.ideal(load)
        # The motor's temperature follows the load after a first-order thermal lag.
        target = self.temp0 + 15.0 * load
        self.temp_state = target if self.temp_state is None else self.temp_state + (target - self.temp_state) * min(1.0, dt / self.temp_lag_s)
        values["temperature"] = self.temp_state
        fault = None
        if allow_faults and t >= self.break_end and rng.random() < fault_p:
            self.break_start, self.break_end = t, t + self.duration_s
            fault = {"fault": "relation_break", "sensors": ["current", "flow"], "duration_s": self.duration_s,
                     "current": f"+{BREAK_FRACTION:.0%} of its band", "flow": f"-{BREAK_FRACTION:.0%} of its band"}
        k = self.breaking(t)
        if k:
            for sensor, sign in (("current", 1.0), ("flow", -1.0)):
                values[sensor] = self._broken(sensor, sign, values[sensor], k)
        # Noise last: a broken sensor is as noisy as ever (a value pinned to a bound would be a
        # stuck transmitter, another fault, and the per-series detectors rightly call it one).
        for s, sd in self.noise().items():
            values[s] += rng.gauss(0.0, sd)
        return values, fault

    def _broken(self, sensor: str, sign: float, now: float, k: float) -> float:
        """``now`` moved ``k x BREAK_FRACTION`` of the band towards one edge (``sign``), saturating
        smoothly (tanh) over the last ``SOFT`` of the band before the margin, so that near the
        edge it still moves with the load as a sensor's normal path does; never past the
        margin, never pulled back."""
        lo, hi = self.band(sensor)
        width = hi - lo
        soft = SOFT * width
        # In the break's direction: u = sign x value, and the margin is an upper limit on u.
        u_now = sign * now
        u_moved = u_now + k * BREAK_FRACTION * width
        knee = sign * (hi - MARGIN * width if sign > 0 else lo + MARGIN * width) - soft
        if u_moved > knee:
            u_moved = knee + soft * math.tanh((u_moved - knee) / soft)
        return sign * max(u_now, u_moved)
