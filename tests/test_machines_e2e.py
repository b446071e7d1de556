"""Machines in the running agent, end to end (issue 14): a PLC-side paho client publishes a
simulated pump, one sensor per topic; the agent (a real process, the default detectors)
assembles its rows, fits its machine model in the worker, and a SCADA-side client receives
the machine's alarm on its own topic.

The pump's relation breaks (current rises as flow falls) while each sensor stays inside its
own normal band (``pump_sim.py``): one machine alarm naming current and flow, held until the
relation is restored, and nothing from the per-series detectors. A second test restarts the
agent while the alarm is held: its model, its live state and its open alarm come back, and
the alarm is held until the relation is restored, as without the restart."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import (
    AgentProcess,
    Mosquitto,
    Publisher,
    Subscriber,
    agent_config,
    free_port,
    wait_for,
)

from edge_agent.pump_sim import SENSORS, Pump

N = 1500
BREAK_AT = 1200  # pump_sim: ramped in over 10 s, restored 60 s later
T0 = time.time() - 2 * N  # one row a second, all in the recent past
PROMTOOL = shutil.which("promtool")


def pump_rows(seed: int = 4) -> list[list[float]]:
    rng = random.Random(seed)
    pump = Pump.random("p1", rng)
    rows = []
    for t in range(N):
        fire = t == BREAK_AT
        values, _ = pump.step(float(t), 1.0, rng, 1.0 if fire else 0.0, fire)
        rows.append([values[s] for s in SENSORS])
    return rows


def publish(pub: Publisher, rows: list[list[float]], start: int, stop: int) -> None:
    infos = [pub.reading(f"plant/l1/p1/{s}", row[j], T0 + t + 0.01 * j)
             for t, row in zip(range(start, stop), rows[start:stop], strict=True) for j, s in enumerate(SENSORS)]
    for info in infos:
        info.wait_for_publish(60)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def start(tmp_path: Path, mosquitto: Mosquitto, http_port: int | None = None, **overrides: object) -> AgentProcess:
    cfg = agent_config(tmp_path, mosquitto, **{
        "detector": {},  # the per-series default (robust), 500 readings to its first model
        "subscriptions": [{"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}", "machine": "{line}/{machine}"}],
        "ingest": {"max_past_age_s": 1e6},
        "http": {"enabled": http_port is not None, "port": http_port or 8000},
    }, **overrides)
    agent = AgentProcess(tmp_path, cfg).start()
    agent.wait_connected()
    return agent


def learn(agent: AgentProcess, pub: Publisher, rows: list[list[float]]) -> None:
    """Until every model exists (5 series, 1 machine): rows that arrive while a machine's first
    model is fitted only bring it up to date, without alarms."""
    publish(pub, rows, 0, 600)
    wait_for(lambda: agent.models_active() >= 6, 90, "5 series models and 1 machine model active")
    assert "machine 'l1/p1': model v1 (baseline_t2) active after initial fit" in agent.log()


def summary(alarms: list[dict]) -> list[tuple]:
    return [(a["state"], round(a["ts"] - T0, 1), a["seq"], a["message"]) for a in alarms]


@pytest.mark.timeout(180)
def test_a_relation_break_raises_one_machine_alarm_naming_the_sensors(tmp_path: Path, mosquitto: Mosquitto) -> None:
    http_port = free_port()
    rows = pump_rows()
    series_alarms = Subscriber(mosquitto, "edge/gw-test/alerts/#")
    machine_alarms = Subscriber(mosquitto, "edge/gw-test/machine_alerts/#")
    pub = Publisher(mosquitto)
    agent = start(tmp_path, mosquitto, http_port)
    try:
        learn(agent, pub, rows)
        publish(pub, rows, 600, BREAK_AT + 50)
        wait_for(lambda: len(machine_alarms.json()) >= 1, 60, "the machine alarm")
        time.sleep(1.0)
        (raised,) = machine_alarms.json()  # one alarm, still held: the relation is still broken
        assert machine_alarms.messages[0][0] == "edge/gw-test/machine_alerts/l1/p1"
        assert raised["state"] == "raised" and raised["machine"] == "l1/p1" and raised["seq"] == 1
        assert BREAK_AT <= raised["ts"] - T0 < BREAK_AT + 15
        assert raised["score"] >= raised["threshold"] > 0
        top = {s["sensor"]: s for s in raised["sensors"][:2]}
        assert set(top) == {"current", "flow"}
        assert top["current"]["z"] > 0 > top["flow"]["z"]
        assert all(isinstance(top[s]["value"], float) and isinstance(top[s]["expected"], float) for s in top)
        assert raised["message"].startswith("current high, flow low"), raised["message"]
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/machines", timeout=10) as r:
            (listed,) = json.loads(r.read())["machines"]
        assert listed["state"] == "alarm" and listed["alarm"]["alert_id"] == raised["alert_id"]
        assert listed["top_sensors"][:2] == ["current high", "flow low"], listed
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=10) as r:
            page = r.read().decode()
        row = re.search(r'<tr class="machine row-alarm" data-machine="l1/p1">(.*?)</tr>', page)
        assert row is not None and "current high, flow low" in row[1], page[:3000]
        metrics = scrape(http_port)
        assert 'edge_agent_machine_alarm{machine="l1/p1"} 1.0' in metrics
        assert 'edge_agent_machines{state="alarm"} 1.0' in metrics
        assert "edge_agent_machines_alarms_raised_total 1.0" in metrics
        if PROMTOOL is not None:  # every machine family populated: valid exposition, no lint
            res = subprocess.run([PROMTOOL, "check", "metrics"], input=metrics.encode(), capture_output=True, timeout=30)
            assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), (res.stdout + res.stderr).decode()

        publish(pub, rows, BREAK_AT + 50, N)  # the relation is restored at BREAK_AT + 60
        wait_for(lambda: len(machine_alarms.json()) >= 2, 60, "the machine alarm's clear")
        time.sleep(1.0)
        assert 'edge_agent_machine_alarm{machine="l1/p1"} 0.0' in scrape(http_port)
    finally:
        pub.close()
        agent.stop()
    got = machine_alarms.json()
    assert [a["state"] for a in got] == ["raised", "cleared"], summary(got)
    cleared = got[1]
    assert cleared["raised_alert_id"] == raised["alert_id"] and cleared["seq"] == 1
    assert BREAK_AT + 60 <= cleared["ts"] - T0 < BREAK_AT + 120
    # No series sees the break: each sensor stays inside its band. The flow's jump back when the
    # relation is restored (~10 units in one reading, ~7 of its noise scales) may raise a spike
    # on the series (since session 5's spike tail and 0.5 predictor rate); nothing before it.
    during = [a for a in series_alarms.json() if a["ts"] - T0 < BREAK_AT + 60]
    assert during == [], json.dumps(during)[:2000]


def checkpoint_last_row(agent: AgentProcess) -> float:
    """The last row time the machines' live-state file holds for the pump (-inf: none yet)."""
    try:
        doc = json.loads((agent.state_dir / "machine_live.json").read_text())
        return float(doc["machines"]["l1/p1"]["last_row_ts"])
    except (OSError, ValueError, KeyError):
        return float("-inf")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["clean stop", "crash"])
def test_a_held_machine_alarm_and_its_model_survive_a_restart(tmp_path: Path, mosquitto: Mosquitto, how: str) -> None:
    """Restarted 30 s into the relation break: after a clean stop (SIGTERM: the live state is
    written as the agent stops), and after a crash (SIGKILL, a power loss: the periodic write,
    machines.live_state_every_s, here every 0.5 s, is what comes back)."""
    rows = pump_rows()
    machine_alarms = Subscriber(mosquitto, "edge/gw-test/machine_alerts/#")
    pub = Publisher(mosquitto)
    agent = start(tmp_path, mosquitto, **({"machines.live_state_every_s": 0.5} if how == "crash" else {}))
    try:
        learn(agent, pub, rows)
        publish(pub, rows, 600, BREAK_AT + 30)
        wait_for(lambda: len(machine_alarms.json()) >= 1, 60, "the machine alarm")
        raised = machine_alarms.json()[0]
        if how == "crash":
            wait_for(lambda: checkpoint_last_row(agent) >= T0 + BREAK_AT + 29, 30, "a periodic write of the live state after the last row")
            agent.kill()
        else:
            assert agent.stop() == 0
        agent.start()
        agent.wait_connected()
        agent.wait_log("loaded 1 machine model(s)")
        agent.wait_log("(1 with their live state)")
        agent.wait_log("1 machine alarm(s) open")
        publish(pub, rows, BREAK_AT + 30, N)
        wait_for(lambda: len(machine_alarms.json()) >= 2, 60, "the machine alarm's clear")
        time.sleep(1.0)
    finally:
        pub.close()
        agent.stop()
    assert "model v1 (baseline_t2) active after initial fit" not in agent.log()[agent._log_from:]  # no refit: the stored one
    got = machine_alarms.json()
    # One alarm, held through the restart until the relation is restored (the break lasts
    # 60 s): the machine went on from its baselines as last written (machines/checkpoint.py).
    # Without them it restarted from its fit-end state and, after the gap, learnt the broken
    # relation. After a clean stop: cleared 42 s after the raise, then raised #2 "current low,
    # flow high". After a crash (measured with live_state_every_s 0): raised at row 1204,
    # cleared at 1239 with the relation still broken, #2 raised at its restoration (1260).
    assert [a["state"] for a in got] == ["raised", "cleared"], summary(got)
    assert got[1]["raised_alert_id"] == raised["alert_id"] and got[1]["seq"] == 1
    assert BREAK_AT + 60 <= got[1]["ts"] - T0 < BREAK_AT + 120, summary(got)


@pytest.mark.timeout(180)
def test_the_agent_pushes_machine_models_and_serves_a_pulled_one(tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 (moto server): the agent's machine model goes up under .machines/; a newer one
    published for the fleet comes down and is used without a restart."""
    import os
    import uuid

    import boto3
    from botocore.config import Config
    from s3_server import FAKE_CREDENTIALS, MotoServer

    from edge_agent.config import AgentConfig
    from edge_agent.machines import MachineSet
    from edge_agent.model_store import ModelStore
    from edge_agent.pipeline import InlineTrainer
    from edge_agent.s3_slots import MACHINE_MANIFEST_KIND
    from edge_agent.s3_sync import MACHINES_DIR, S3Sync

    for k, v in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    rows = pump_rows()
    with MotoServer() as moto:
        s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
        bucket = f"models-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        s3cfg = {"enabled": True, "bucket": bucket, "endpoint_url": moto.endpoint_url, "region": "us-east-1",
                 "fleet_prefix": "fleet/models", "interval_s": 0.5, "retry_initial_s": 0.2, "retry_max_s": 1.0, "timeout_s": 2.0}
        cfg = agent_config(tmp_path, mosquitto, **{
            "subscriptions": [{"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}", "machine": "{line}/{machine}"}],
            "ingest": {"max_past_age_s": 1e6}, "s3": s3cfg})
        agent = AgentProcess(tmp_path, cfg, env={k: v for k, v in os.environ.items() if k.startswith("AWS_")}).start()
        pub = Publisher(mosquitto)
        try:
            agent.wait_connected()
            publish(pub, rows, 0, 450)

            def keys() -> list[str]:
                return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]

            wait_for(lambda: "edge-agent/gw-test/.machines/l1%2Fp1/v000001/manifest.json" in keys(), 30, "machine v1 pushed")

            # The control room publishes a machine model for the fleet (fitted on later rows).
            pcfg = AgentConfig.model_validate({"gateway_id": "models", "state_dir": str(tmp_path / "publisher"),
                                               "s3": {**s3cfg, "prefix": "fleet", "fleet_prefix": None}})
            pstore = ModelStore.for_machines(tmp_path / "publisher" / "machine_models", fsync=False)
            ms = MachineSet(pcfg, InlineTrainer(), lambda e: None, store=pstore)
            for t in range(400, 900):
                ms.feed_row("l1/p1", list(zip(SENSORS, rows[t], strict=True)), T0 + t)
            assert pstore.active_version("l1/p1") == 1
            report = S3Sync(pcfg, pstore, db_path=tmp_path / "publisher" / "s3m.sqlite", remote_dir=MACHINES_DIR, kind=MACHINE_MANIFEST_KIND).sync_once()
            assert report.ok and report.pushed == 1, report
            agent.wait_log("machine 'l1/p1': model v2 (baseline_t2) pulled from S3 is active", 30)
            store = ModelStore.for_machines(agent.state_dir / "machine_models")
            assert store.active_version("l1/p1") == 2 and store.read_meta("l1/p1", 2)["imported_from"]["source"] == "fleet/models/.machines"
            assert not any(k.startswith("edge-agent/gw-test/.machines/") and "/v000002/" in k for k in keys())  # not pushed back
        finally:
            pub.close()
            assert agent.stop() == 0
