"""A plant in a box: machines with temperature, vibration and pressure sensors over MQTT.

Signals are realistic enough to exercise detectors: temperature drifts slowly and follows a
(compressed) daily cycle, vibration is noisy with a stable level, pressure is tight around a
set-point. Faults are injected at random and printed as JSON lines on stdout, so a person or
a test can compare what was injected with the alarms that arrived:

- ``spike``: one reading far off the current level;
- ``level_shift``: the level jumps and stays shifted for a while;
- ``stuck``: the sensor repeats its last value (a frozen transmitter).

Topics are ``plant/{line}/{machine}/{sensor}`` with ``{"value": v, "ts": epoch_seconds}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field

SENSORS = {
    # name: (base level, noise sigma, daily amplitude)
    "temp": (60.0, 0.3, 4.0),
    "vibration": (2.0, 0.08, 0.0),
    "pressure": (5.0, 0.03, 0.1),
}


@dataclass
class SensorState:
    machine: str
    sensor: str
    base: float
    sigma: float
    amplitude: float
    phase: float
    drift: float = 0.0
    shift: float = 0.0
    shift_until: float = 0.0
    stuck_value: float | None = None
    stuck_until: float = 0.0
    last: float = 0.0
    faults: list[dict] = field(default_factory=list)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT (default %(default)s)")
    p.add_argument("--machines", type=int, default=3, help="machines to simulate, each with temp, vibration and pressure sensors (default %(default)s)")
    p.add_argument("--rate", type=float, default=10.0, help="readings per second per sensor (default %(default)s)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until Ctrl-C)")
    p.add_argument("--line", default="line1", help="production line in the topics plant/LINE/m<N>/<sensor> (default %(default)s)")
    p.add_argument("--fault-rate", type=float, default=2.0, help="faults per sensor per hour of readings")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds without faults at the start (models train)")
    p.add_argument("--day-seconds", type=float, default=600.0, help="length of one simulated daily cycle")
    p.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run (default: a new one each run)")
    p.add_argument("--qos", type=int, choices=[0, 1], default=1, help="MQTT QoS of the readings (default %(default)s)")


def step(s: SensorState, t: float, rng: random.Random, day: float, fault_p: float, allow_faults: bool) -> tuple[float, dict | None]:
    s.drift += rng.gauss(0, s.sigma * 0.01)
    s.drift *= 0.999  # drift wanders but does not run away
    level = s.base + s.amplitude * math.sin(2 * math.pi * t / day + s.phase) + s.drift
    value = level + rng.gauss(0, s.sigma)
    fault = None
    if t < s.stuck_until and s.stuck_value is not None:
        value = s.stuck_value
    else:
        s.stuck_value = None
        if t < s.shift_until:
            value += s.shift
        elif allow_faults and rng.random() < fault_p:
            kind = rng.choice(["spike", "spike", "level_shift", "stuck"])
            if kind == "spike":
                value = level + rng.choice([-1, 1]) * s.sigma * rng.uniform(12, 20)
            elif kind == "level_shift":
                s.shift = rng.choice([-1, 1]) * s.sigma * rng.uniform(8, 12)
                s.shift_until = t + 30.0
                value += s.shift
            else:
                s.stuck_value = s.last
                s.stuck_until = t + 30.0
                value = s.last
            fault = {"fault": kind, "value": round(value, 4)}
    s.last = value
    return value, fault


async def simulate(args: argparse.Namespace) -> int:
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311

    host, _, port = args.broker.rpartition(":")
    rng = random.Random(args.seed)
    sensors = [
        SensorState(f"m{i + 1}", name, base * rng.uniform(0.9, 1.1), sigma, amp, rng.uniform(0, 6.28))
        for i in range(args.machines)
        for name, (base, sigma, amp) in SENSORS.items()
    ]
    client = gmqtt.Client(f"edge-sim-{rng.randrange(1 << 30):x}")
    await client.connect(host or "127.0.0.1", int(port or 1883), version=MQTTv311)
    interval = 1.0 / args.rate
    fault_p = args.fault_rate / 3600.0 / args.rate
    start = time.time()
    n = 0
    print(json.dumps({"event": "start", "broker": args.broker, "series": [f"{s.machine}/{s.sensor}" for s in sensors], "rate_hz": args.rate}), flush=True)
    try:
        next_tick = time.monotonic()
        while args.duration <= 0 or time.time() - start < args.duration:
            now = time.time()
            t = now - start
            for s in sensors:
                value, fault = step(s, t, rng, args.day_seconds, fault_p, t >= args.warmup)
                topic = f"plant/{args.line}/{s.machine}/{s.sensor}"
                client.publish(topic, json.dumps({"value": round(value, 4), "ts": round(now, 3)}), qos=args.qos)
                n += 1
                if fault:
                    print(json.dumps({"event": "fault", "series": f"{s.machine}/{s.sensor}", "ts": round(now, 3), **fault}), flush=True)
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    except asyncio.CancelledError:
        pass
    finally:
        print(json.dumps({"event": "stop", "published": n}), flush=True)
        try:
            await asyncio.wait_for(client.disconnect(), 2)
        except Exception:
            pass
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(simulate(args))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"simulate: cannot reach broker {args.broker}: {exc}", file=sys.stderr)
        return 1
