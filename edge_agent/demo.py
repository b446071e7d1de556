"""``make demo``: an embedded MQTT broker, the agent and the simulator in one process.

The embedded broker is amqtt, which speaks MQTT 3.1.1 only, so the demo also shows the
agent's automatic fallback from MQTT 5. With ``--broker HOST:PORT`` it uses yours instead.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys

from edge_agent.app import run_agent
from edge_agent.config import AgentConfig
from edge_agent.logsetup import setup_logging
from edge_agent.simulator import simulate

GATEWAY = "gw-demo"
PUMP_TRAIN_ROWS = 120  # a pump's first model after 2 min of its 1 Hz rows (the default is 400)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_port(preferred: int) -> int:
    if _port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoEmbeddedBroker(OSError):
    pass


async def _start_broker(port: int):
    try:
        from amqtt.broker import Broker
    except ImportError:
        raise NoEmbeddedBroker(
            "the embedded broker needs amqtt, which is not installed: pip install 'edge-agent[demo]' "
            "(make install includes it), or give --broker HOST:PORT of a broker you run"
        ) from None

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    return broker


async def _print_alarms(host: str, port: int) -> None:
    """Play SCADA: subscribe to the alarm topics and print each raise and clear."""
    import json

    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311

    def on_message(client, topic, payload, qos, props):  # noqa: ANN001 - gmqtt callback
        try:
            a = json.loads(payload)
            # A machine's alarm names the sensors that explain it (docs/machines.md).
            what = "MACHINE ALARM" if "machine" in a else "ALARM"
            print(f"{what} {a['state']:8} {a.get('series') or a['machine']:14} ts={a['ts']:.2f} {a.get('message', '')} "
                  f"[{a['model']['detector']} v{a['model']['version']}, id {a['alert_id']}]", flush=True)
        except (ValueError, KeyError, TypeError):
            pass
        return 0

    client = gmqtt.Client(f"demo-scada-{port}")
    client.on_message = on_message
    await client.connect(host, port, version=MQTTv311)
    client.subscribe(f"edge/{GATEWAY}/alerts/#", qos=1)
    client.subscribe(f"edge/{GATEWAY}/machine_alerts/#", qos=1)
    try:
        await asyncio.Event().wait()
    finally:
        await client.disconnect()


async def demo(args: argparse.Namespace) -> int:
    setup_logging("INFO")
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    broker = None
    if args.broker:
        host, _, port_s = args.broker.rpartition(":")
        host, port = host or "127.0.0.1", int(port_s)
    else:
        host, port = "127.0.0.1", _free_port(1883)
        broker = await _start_broker(port)
    http_port = _free_port(args.http_port)
    sparkplug = getattr(args, "sparkplug", False)
    doc = {
        "gateway_id": GATEWAY,
        "state_dir": args.state_dir,
        # amqtt never answers an MQTT 5 CONNECT: a short timeout makes the fallback quick.
        "mqtt": {"host": host, "port": port, "connect_timeout_s": 3.0},
        "detector": {"min_train_samples": 200},
        "http": {"port": http_port},
    }
    pumps = 0 if sparkplug else getattr(args, "pumps", 1)
    if pumps:
        # Pumps beside the plain machines: one json_multi message per pump and reading, its
        # five sensors series of their own and one machine row (docs/machines.md).
        doc["subscriptions"] = [
            {"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}"},
            {"topic": "plc/{line}/{machine}", "format": "json_multi", "series": "{machine}/{sensor}", "machine": "{line}/{machine}"},
        ]
        doc["machines"] = {"min_train_rows": PUMP_TRAIN_ROWS}
    if sparkplug:
        # The simulated plant is a Sparkplug edge node (group "plant", node "line1"); the agent
        # reads it and is itself an edge node (group "edge-agent", node GATEWAY) for SCADA.
        doc["subscriptions"] = [{"format": "sparkplug_b", "topic": "spBv1.0/plant/+/+/#"}]
        doc["sparkplug"] = {"enabled": True, "score_interval_s": 5.0}
    cfg = AgentConfig.model_validate(doc)
    readings = (f"spBv1.0/plant/DDATA/line1/m<N> (Sparkplug B, {args.machines} machines x 3 sensors at {args.rate:g} Hz)"
                if sparkplug else f"plant/line1/m<N>/<sensor>  ({args.machines} machines x 3 sensors at {args.rate:g} Hz)")
    series = "plant/line1/<machine>/<sensor>" if sparkplug else "<machine>/<sensor>"
    if pumps:
        readings += f"\n              plc/line1/p<N>  ({pumps} pump(s) at 1 Hz, 5 correlated sensors in one json_multi message)"
    machine_out = f"\n  machine     edge/{GATEWAY}/machine_alerts/line1/p<N>  (a pump's relation break: current up as flow falls, from ~{PUMP_TRAIN_ROWS + 15} s)" if pumps else ""
    spb_out = f"\n  sparkplug   spBv1.0/edge-agent/+/{GATEWAY}/#  (NBIRTH, DBIRTH per machine, DDATA, NDEATH)" if sparkplug else ""
    print(
        f"""
edge-agent demo
  broker      {host}:{port} ({'embedded amqtt, MQTT 3.1.1' if broker else 'yours'})
  readings    {readings}
  alarms      edge/{GATEWAY}/alerts/{series}{machine_out}{spb_out}
  status page http://127.0.0.1:{http_port}/   metrics http://127.0.0.1:{http_port}/metrics

  watch the alarms:  mosquitto_sub -h {host} -p {port} -t 'edge/{GATEWAY}/#' -v
  models train after 200 readings per series (~{200 / args.rate:.0f} s), a pump's after {PUMP_TRAIN_ROWS} s; faults start after {args.warmup:g} s.
  Injected faults are printed below as JSON lines. Ctrl-C stops everything.
""",
        flush=True,
    )
    agent = asyncio.create_task(run_agent(cfg, stop=stop))
    await asyncio.sleep(1.0)
    sim_args = argparse.Namespace(
        broker=f"{host}:{port}", machines=args.machines, rate=args.rate, duration=0.0, line="line1",
        fault_rate=120.0, warmup=args.warmup, day_seconds=300.0, seed=None, qos=1,
        sparkplug=sparkplug, group="plant",
        # Pumps at 1 Hz: baseline_t2 learns a pump's relations from rows spanning its load's
        # swings (periods up to 3 min); at the demo's 20 Hz, 120 rows would span 6 s. Breaks
        # start once its model can exist (120 rows, then the fit).
        pumps=pumps, pump_format="json_multi", pump_rate=1.0, break_rate=40.0, break_seconds=60.0,
        break_warmup=PUMP_TRAIN_ROWS + 15.0,
    )
    sim = asyncio.create_task(simulate(sim_args))
    scada = asyncio.create_task(_print_alarms(host, port))
    await stop.wait()
    sim.cancel()
    scada.cancel()
    await asyncio.gather(sim, scada, return_exceptions=True)
    code = await agent
    if broker is not None:
        await broker.shutdown()
    print("demo stopped", flush=True)
    return code


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(demo(args))
    except OSError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
