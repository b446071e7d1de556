"""The simulator against a real broker and agent, and `edge-agent demo` as a user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, AgentProcess, Mosquitto, Subscriber, agent_config, free_port, wait_for


@pytest.mark.timeout(90)
def test_simulator_faults_reach_scada_as_alarms(tmp_path: Path, mosquitto: Mosquitto) -> None:
    agent = AgentProcess(tmp_path, agent_config(tmp_path, mosquitto, **{"detector.name": "adaptive", "detector.min_train_samples": 100})).start()
    scada = Subscriber(mosquitto, "edge/gw-test/alerts/#")
    try:
        agent.wait_connected()
        sim = subprocess.run(
            [sys.executable, "-m", "edge_agent", "simulate", "--broker", mosquitto.address, "--machines", "2", "--rate", "50",
             "--duration", "12", "--warmup", "4", "--fault-rate", "1500", "--seed", "11"],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )
        assert sim.returncode == 0, sim.stderr
        events = [json.loads(line) for line in sim.stdout.splitlines()]
        assert events[0]["event"] == "start" and len(events[0]["series"]) == 6
        faults = [e for e in events if e["event"] == "fault"]
        assert faults, "the simulator injected nothing"
        assert events[-1] == {"event": "stop", "published": events[-1]["published"]} and events[-1]["published"] > 3000
        wait_for(lambda: scada.json(), 10, "alarms")
        raised = {a["series"] for a in scada.json() if a["state"] == "raised"}
        spiked = {f["series"] for f in faults if f["fault"] in ("spike", "level_shift")}
        print(f"faults injected: {len(faults)} on {sorted({f['series'] for f in faults})}; alarms raised on {sorted(raised)}")
        assert raised & spiked, "no injected spike or level shift raised an alarm"
    finally:
        scada.close()
        assert agent.stop() == 0


@pytest.mark.timeout(120)
def test_demo_runs_with_embedded_broker_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "demo", "--rate", "50", "--warmup", "6", "--http-port", str(free_port()),
             "--state-dir", str(tmp_path / "state")],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )
    try:
        text = lambda: log.read_text(errors="replace")  # noqa: E731
        wait_for(lambda: "(MQTT 3.1.1, client id" in text(), 30, f"the agent connected to the embedded broker\n{text()[-2000:]}")
        assert "falling back to MQTT 3.1.1" in text()
        assert "mosquitto_sub -h 127.0.0.1 -p" in text()
        wait_for(lambda: "ALARM raised" in text(), 60, f"an alarm printed\n{text()[-2000:]}")
        proc.send_signal(signal.SIGINT)
        t = time.monotonic()
        assert proc.wait(15) == 0
        print(f"demo stopped {time.monotonic() - t:.2f} s after Ctrl-C")
        assert "demo stopped" in text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
