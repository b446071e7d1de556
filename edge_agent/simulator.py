"""A plant in a box: machines with temperature, vibration and pressure sensors over MQTT.

Signals are realistic enough to exercise detectors: temperature drifts slowly and follows a
(compressed) daily cycle, vibration is noisy with a stable level, pressure is tight around a
set-point. Faults are injected at random and printed as JSON lines on stdout, so a person or
a test can compare what was injected with the alarms that arrived:

- ``spike``: one reading far off the current level;
- ``level_shift``: the level jumps and stays shifted for a while;
- ``stuck``: the sensor repeats its last value (a frozen transmitter).

Topics are ``plant/{line}/{machine}/{sensor}`` with ``{"value": v, "ts": epoch_seconds}``.

``--pumps N`` adds pumps ``p1..pN`` whose five sensors follow a common load (``pump_sim.py``)
and whose injected fault is ``relation_break``: current rises as flow falls, each inside its
normal band, for ``--break-seconds``. They publish on the same per-sensor topics, or with
``--pump-format json_multi`` one message per pump on ``plc/{line}/{machine}``
(``{"ts": .., "flow": .., "current": .., ...}``). Machine-level detection sees them when the
agent's subscription names the machine (``machine: "{line}/{machine}"``, docs/machines.md).
Pumps publish JSON also with ``--sparkplug``.

With ``--sparkplug`` the plant is a Sparkplug B edge node instead (``SparkplugPlant``): node
``{line}`` in group ``--group``, one device per machine, its sensors as aliased metrics; NBIRTH
and DBIRTHs on connect and on a rebirth request, one DDATA per machine and tick, NDEATH as the
will and on stop. The agent names these series ``{group}/{line}/{machine}/{sensor}``.
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
from typing import Any

from edge_agent.pump_sim import SENSORS as SENSOR_NAMES
from edge_agent.pump_sim import Pump

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
    p.add_argument("--pumps", type=int, default=0, help="pumps with correlated sensors (p1..pN); default none")
    p.add_argument("--pump-format", choices=["topics", "json_multi"], default="topics",
                   help="pumps publish one topic per sensor (default) or one json_multi message per pump")
    p.add_argument("--break-rate", type=float, default=None, help="relation breaks per pump per hour (default: --fault-rate)")
    p.add_argument("--break-seconds", type=float, default=60.0, help="how long a relation break lasts")
    p.add_argument("--pump-rate", type=float, default=None, help="pump messages per second (default: --rate)")
    p.add_argument("--break-warmup", type=float, default=None, help="seconds without relation breaks at the start (default: --warmup)")
    p.add_argument("--sparkplug", action="store_true", help="publish as a Sparkplug B edge node (group --group, node --line)")
    p.add_argument("--group", default="plant", help="Sparkplug group id (with --sparkplug)")


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
    # getattr: callers that build their own Namespace (demo.py) predate the pump options.
    pumps = [Pump.random(f"p{i + 1}", rng) for i in range(getattr(args, "pumps", 0))]
    for pump in pumps:
        pump.duration_s = getattr(args, "break_seconds", 60.0)
    break_rate = getattr(args, "break_rate", None)
    # Pumps publish at their own rate (default: --rate) on the same clock.
    pump_rate = getattr(args, "pump_rate", None) or args.rate
    pump_interval = 1.0 / pump_rate
    break_p = (args.fault_rate if break_rate is None else break_rate) / 3600.0 / pump_rate
    break_warmup = getattr(args, "break_warmup", None)
    pump_args = argparse.Namespace(**{**vars(args), "warmup": args.warmup if break_warmup is None else break_warmup})
    next_pump_t = 0.0
    sparkplug = SparkplugPlant(args.group, args.line, sensors) if getattr(args, "sparkplug", False) else None
    client = gmqtt.Client(f"edge-sim-{rng.randrange(1 << 30):x}", will_message=sparkplug.will() if sparkplug else None)
    if sparkplug is not None:
        sparkplug.attach(client)
    await client.connect(host or "127.0.0.1", int(port or 1883), version=MQTTv311)
    if sparkplug is not None:
        sparkplug.birth()
    interval = 1.0 / args.rate
    fault_p = args.fault_rate / 3600.0 / args.rate
    start = time.time()
    n = 0
    prefix = f"{args.group}/{args.line}/" if sparkplug else ""
    series = [f"{prefix}{s.machine}/{s.sensor}" for s in sensors] + [f"{p.machine}/{s}" for p in pumps for s in SENSOR_NAMES]
    start_event = {"event": "start", "broker": args.broker, "series": series, "rate_hz": args.rate}
    if pumps:
        start_event["machines"] = [p.machine for p in pumps]
    print(json.dumps(start_event), flush=True)
    try:
        next_tick = time.monotonic()
        while args.duration <= 0 or time.time() - start < args.duration:
            now = time.time()
            t = now - start
            tick: dict[str, list[tuple[SensorState, float]]] = {}
            for s in sensors:
                value, fault = step(s, t, rng, args.day_seconds, fault_p, t >= args.warmup)
                if sparkplug is not None:
                    tick.setdefault(s.machine, []).append((s, value))
                else:
                    topic = f"plant/{args.line}/{s.machine}/{s.sensor}"
                    client.publish(topic, json.dumps({"value": round(value, 4), "ts": round(now, 3)}), qos=args.qos)
                n += 1
                if fault:
                    print(json.dumps({"event": "fault", "series": f"{prefix}{s.machine}/{s.sensor}", "ts": round(now, 3), **fault}), flush=True)
            if sparkplug is not None:
                for machine, readings in tick.items():
                    sparkplug.ddata(machine, readings, now)
            if pumps and t >= next_pump_t:
                next_pump_t += pump_interval
                for pump in pumps:
                    n += publish_pump(client, pump_args, pump, t, pump_interval, now, rng, break_p)
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    except asyncio.CancelledError:
        pass
    finally:
        print(json.dumps({"event": "stop", "published": n}), flush=True)
        if sparkplug is not None:
            sparkplug.death()
        try:
            await asyncio.wait_for(client.disconnect(), 2)
        except Exception:
            pass
    return 0


def publish_pump(client: Any, args: argparse.Namespace, pump: Pump, t: float, dt: float, now: float, rng: random.Random, break_p: float) -> int:
    values, fault = pump.step(t, dt, rng, break_p, t >= args.warmup)
    ts = round(now, 3)
    if getattr(args, "pump_format", "topics") == "json_multi":
        doc = {"ts": ts, **{k: round(v, 4) for k, v in values.items()}}
        client.publish(f"plc/{args.line}/{pump.machine}", json.dumps(doc), qos=args.qos)
        sent = len(values)
    else:
        for sensor, value in values.items():
            client.publish(f"plant/{args.line}/{pump.machine}/{sensor}", json.dumps({"value": round(value, 4), "ts": ts}), qos=args.qos)
        sent = len(values)
    if fault:
        print(json.dumps({"event": "fault", "machine": pump.machine, "series": [f"{pump.machine}/{s}" for s in fault["sensors"]],
                          "ts": ts, **fault}), flush=True)
    return sent


class SparkplugPlant:
    """The simulated plant as a Sparkplug B edge node (encoded with edge_agent.sparkplug.schema)."""

    def __init__(self, group: str, node: str, sensors: list[SensorState]) -> None:
        from edge_agent.sparkplug import schema

        self.schema = schema
        self.group, self.node = group, node
        self.client: object = None
        self.seq = 0
        self.bdseq = 0  # one CONNECT per run
        self.alias = {(s.machine, s.sensor): i + 1 for i, s in enumerate(sensors)}
        self.sensors = sensors
        self.last = {(s.machine, s.sensor): s.base for s in sensors}

    def _bdseq_payload(self) -> bytes:
        P = self.schema.Payload
        ts = self.schema.now_ms()
        p = P(timestamp=ts)
        p.metrics.add(name="bdSeq", timestamp=ts, datatype=self.schema.DataType.Int64, long_value=self.bdseq)
        return p.SerializeToString()

    def will(self):  # noqa: ANN201 - a gmqtt.Message
        import gmqtt

        return gmqtt.Message(self.schema.topic(self.group, "NDEATH", self.node), self._bdseq_payload(), qos=1, retain=False)

    def attach(self, client) -> None:  # noqa: ANN001 - gmqtt.Client
        self.client = client

        def on_message(c, topic, payload, qos, props):  # noqa: ANN001 - gmqtt callback
            try:
                p = self.schema.Payload.FromString(payload)
            except Exception:
                return 0
            if any(m.name == self.schema.REBIRTH and m.boolean_value for m in p.metrics):
                self.birth()
            return 0

        def on_connect(c, flags, rc, props):  # noqa: ANN001 - gmqtt callback
            c.subscribe(self.schema.topic(self.group, "NCMD", self.node), qos=1)

        client.on_message = on_message
        client.on_connect = on_connect

    def _publish(self, mtype: str, device: str | None, p) -> None:  # noqa: ANN001 - a Payload
        self.client.publish(self.schema.topic(self.group, mtype, self.node, device), p.SerializeToString(), qos=0)  # type: ignore[attr-defined]

    def birth(self) -> None:
        sc, DT = self.schema, self.schema.DataType
        ts = sc.now_ms()
        p = sc.Payload(timestamp=ts, seq=0)
        p.metrics.add(name="bdSeq", timestamp=ts, datatype=DT.Int64, long_value=self.bdseq)
        p.metrics.add(name=sc.REBIRTH, timestamp=ts, datatype=DT.Boolean, boolean_value=False)
        self.seq = 0
        self._publish("NBIRTH", None, p)
        for machine in dict.fromkeys(s.machine for s in self.sensors):
            self.seq = (self.seq + 1) & 0xFF
            p = sc.Payload(timestamp=ts, seq=self.seq)
            for s in self.sensors:
                if s.machine == machine:
                    p.metrics.add(name=s.sensor, alias=self.alias[(machine, s.sensor)], timestamp=ts, datatype=DT.Double,
                                  double_value=round(self.last[(machine, s.sensor)], 4))
            self._publish("DBIRTH", machine, p)

    def ddata(self, machine: str, readings: list[tuple[SensorState, float]], now: float) -> None:
        ts = int(now * 1000)
        self.seq = (self.seq + 1) & 0xFF
        p = self.schema.Payload(timestamp=ts, seq=self.seq)
        for s, value in readings:
            self.last[(machine, s.sensor)] = value
            p.metrics.add(alias=self.alias[(machine, s.sensor)], timestamp=ts, double_value=round(value, 4))
        self._publish("DDATA", machine, p)

    def death(self) -> None:
        self.client.publish(self.schema.topic(self.group, "NDEATH", self.node), self._bdseq_payload(), qos=0)  # type: ignore[attr-defined]


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(simulate(args))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"simulate: cannot reach broker {args.broker}: {exc}", file=sys.stderr)
        return 1
