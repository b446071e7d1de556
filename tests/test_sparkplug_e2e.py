"""Sparkplug B ingest end to end: pysparkplug plays a PLC edge node against a real mosquitto,
the agent (a real process) subscribes with ``format: sparkplug_b``, and a SCADA-side paho
client receives the JSON alarms: readings sent as DDATA by alias are scored under the right
series; data before a birth, or after a lost message, makes the agent ask the node for a
rebirth, once per rate-limit interval."""

from __future__ import annotations

import time
from pathlib import Path

import pysparkplug as psp
import pytest
from helpers import AgentProcess, Mosquitto, Subscriber, agent_config, wait_for
from sparkplug_peers import DT, PLC

MT = psp.MessageType

DEVICES = {"pump1": [("Motor/Current", 10, DT.DOUBLE, 1.0), ("Temp", 11, DT.INT16, -3)]}


def sparkplug_agent(tmp_path: Path, broker: Mosquitto, **extra: object) -> AgentProcess:
    cfg = agent_config(
        tmp_path, broker,
        subscriptions=[{"format": "sparkplug_b", "topic": "spBv1.0/plant/+/+/#"}],
        **{"detector.min_train_samples": 40, "alarms.clear_after": 3, "sparkplug.ingest.rebirth_interval_s": 2.0, "ingest.reject_log_interval_s": 0, **extra},
    )
    return AgentProcess(tmp_path, cfg).start()


@pytest.mark.timeout(90)
def test_ddata_by_alias_scored_under_the_right_series_and_rebirth_requests(tmp_path: Path, mosquitto: Mosquitto) -> None:
    plc = PLC(mosquitto, "plant", "plc1", DEVICES, answer_rebirth=False)
    plc.birth()  # before the agent runs: the agent never sees this birth
    agent = sparkplug_agent(tmp_path, mosquitto)
    scada = Subscriber(mosquitto, "edge/gw-test/alerts/#")
    try:
        agent.wait_connected()
        time.sleep(0.5)  # the agent's SUBSCRIBE follows its CONNECT
        # Data from a node whose birth the agent did not see: one rebirth request, however
        # many messages arrive within the rate-limit interval (2 s here).
        for _ in range(20):
            plc.ddata("pump1", {10: 1.0, 11: -3})
        wait_for(lambda: plc.rebirth_requests() >= 1, 5, "a rebirth request (NCMD) from the agent")
        time.sleep(0.5)
        assert plc.rebirth_requests() == 1
        plc.answer_rebirth = True
        plc.birth()
        t0 = time.time() + 1  # after the birth values (now): older readings would be refused as stale
        for k in range(60):  # normal readings, by alias
            plc.ddata("pump1", {10: 1.0 + 0.01 * (k % 5), 11: -3 - (k % 3)}, ts=t0 + k)
        wait_for(lambda: "plant/plc1/pump1/Motor/Current" in agent.log() and agent.models_active() >= 2, 20, "models for both series")
        plc.ddata("pump1", {10: 25.0, 11: -3}, ts=t0 + 61)
        plc.ddata("pump1", {10: 1.0, 11: -120}, ts=t0 + 62)  # Int16 far below its normal
        wait_for(lambda: len(scada.json()) >= 2, 10, "two alarms")
        alarms = {a["series"]: a for a in scada.json() if a["state"] == "raised"}
        assert set(alarms) == {"plant/plc1/pump1/Motor/Current", "plant/plc1/pump1/Temp"}
        cur, temp = alarms["plant/plc1/pump1/Motor/Current"], alarms["plant/plc1/pump1/Temp"]
        assert cur["value"] == 25.0 and cur["ts"] == pytest.approx(t0 + 61, abs=1e-3)
        assert temp["value"] == -120.0 and temp["ts"] == pytest.approx(t0 + 62, abs=1e-3)
        # A lost message (seq gap): the agent asks again, the PLC answers, data flows on.
        requests = plc.rebirth_requests()
        time.sleep(2.1)  # past the per-node rate limit
        plc.skip_seq()
        plc.ddata("pump1", {10: 1.0, 11: -3}, ts=t0 + 63)
        wait_for(lambda: plc.rebirth_requests() == requests + 1, 5, "a rebirth request after the gap")
        for k in range(64, 70):
            plc.ddata("pump1", {10: 1.0, 11: -3}, ts=t0 + k)
        wait_for(lambda: len([a for a in scada.json() if a["state"] == "cleared"]) == 2, 10, "both alarms cleared")
        log = agent.log()
        assert "sequence_gap" in log and "unborn" in log
    finally:
        scada.close()
        plc.close()
        assert agent.stop() == 0


@pytest.mark.timeout(60)
def test_simulate_sparkplug_is_a_sparkplug_edge_node(tmp_path: Path, mosquitto: Mosquitto) -> None:
    import subprocess
    import sys

    from helpers import REPO
    from sparkplug_peers import Host

    host = Host(mosquitto, "plant")
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "simulate", "--sparkplug", "--broker", mosquitto.address, "--machines", "2",
         "--rate", "20", "--duration", "2", "--seed", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    try:
        assert proc.returncode == 0, proc.stderr
        wait_for(lambda: host.of(MT.NDEATH), 5, "NDEATH when the simulator stops")
        assert [m.payload.seq for m in host.of(MT.NBIRTH)] == [0]
        assert sorted(m.topic.device_id for m in host.of(MT.DBIRTH)) == ["m1", "m2"]
        data = host.of(MT.DDATA, "m1")
        assert len(data) >= 20
        assert {m.name for m in data[0].payload.metrics} == {"temp", "vibration", "pressure"}  # by alias, named by the host
        assert not host.errors
        assert '"plant/line1/m1/temp"' in proc.stdout
    finally:
        host.close()
