"""Degraded starts of a real agent process: no broker yet, corrupt model versions, a state
directory where the model store cannot be written. The agent keeps running, says why in its
log, and recovers when the cause goes away."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from faults import Collector, PacedPublisher, reading
from helpers import AgentProcess, Mosquitto, agent_config, wait_for

from edge_agent.detectors.statistical import StatisticalDetector
from edge_agent.model_store import ModelStore


def train_rows(topic: str, n: int = 100, seed: int = 0, ago: float = 300) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    now = time.time()
    return [(topic, reading(float(rng.uniform(-1, 1)), now - ago + k)) for k in range(n)]


@pytest.mark.timeout(60)
def test_starts_without_a_broker_keeps_retrying_and_connects_when_it_appears(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")  # not started yet
    agent = AgentProcess(tmp_path, agent_config(tmp_path, broker)).start()
    try:
        wait_for(lambda: agent.log().count("cannot connect to broker") >= 3, 20, "repeated connection attempts")
        assert agent.proc.poll() is None
        broker.start()
        t = time.monotonic()
        agent.wait_connected(15)
        print(f"\nbroker appeared -> agent connected in {time.monotonic() - t:.2f} s")
        scada = Collector(broker, "edge/gw-test/alerts/#", clean=True)
        pub = PacedPublisher(broker)
        pub.publish_chunk(train_rows("plant/l1/m1/temp"))
        wait_for(lambda: agent.models_active() == 1, 20, "model")
        pub.publish_chunk([("plant/l1/m1/temp", reading(40.0, time.time()))])
        wait_for(lambda: scada.json(), 20, "an alarm")
        assert scada.json()[0]["value"] == 40.0
        pub.close()
        scada.close()
    finally:
        assert agent.stop() == 0
        broker.stop()


def fitted() -> StatisticalDetector:
    d = StatisticalDetector(k=3.0)
    d.fit(np.random.default_rng(1).uniform(-1, 1, 100))
    return d


@pytest.mark.timeout(60)
def test_corrupt_model_versions_fall_back_or_retrain(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = agent_config(tmp_path, mosquitto)
    store = ModelStore(Path(cfg["state_dir"]) / "models")
    for sid in ("bad_meta/temp", "bad_arrays/temp"):
        store.save(sid, fitted(), n_samples=100)
        store.save(sid, fitted(), n_samples=100)  # v2, active, corrupted below
    (store.version_dir("bad_meta/temp", 2) / "meta.json").write_bytes(b"\x00garbage{")
    (store.version_dir("bad_arrays/temp", 2) / "arrays.npz").write_bytes(b"PK\x03\x04 not a zip")
    store.save("only/temp", fitted(), n_samples=100)
    (store.version_dir("only/temp", 1) / "meta.json").write_text('{"detector": "statistical", "params": {}}')
    agent = AgentProcess(tmp_path, cfg).start()
    scada = Collector(mosquitto, "edge/gw-test/alerts/#", clean=True)
    pub = PacedPublisher(mosquitto)
    try:
        agent.wait_connected()
        log = agent.log()
        print("\n" + "\n".join(line for line in log.splitlines() if "model store" in line or "serving older" in line))
        assert "bad_meta%2Ftemp/v000002/meta.json: unreadable metadata" in log
        assert "bad_arrays%2Ftemp/v000002/arrays.npz: corrupt arrays" in log
        assert "series 'bad_meta/temp': serving older version v1" in log
        assert "series 'bad_arrays/temp': serving older version v1" in log
        assert "only%2Ftemp/v000001: cannot rebuild detector" in log
        now = time.time()
        pub.publish_chunk([("plant/l1/bad_meta/temp", reading(30.0, now)), ("plant/l1/bad_arrays/temp", reading(30.0, now))])
        wait_for(lambda: len(scada.json()) == 2, 20, "alarms from the previous versions")
        assert {(a["series"], a["model"]["version"]) for a in scada.json()} == {("bad_meta/temp", 1), ("bad_arrays/temp", 1)}
        # The series whose only version is corrupt learns again and serves a new version.
        pub.publish_chunk(train_rows("plant/l1/only/temp"))
        wait_for(lambda: store.active_version("only/temp") == 2, 20, "retrained version")
        pub.publish_chunk([("plant/l1/only/temp", reading(30.0, time.time()))])
        wait_for(lambda: len(scada.json()) == 3, 20, "alarm from the retrained model")
        assert scada.json()[-1]["series"] == "only/temp" and scada.json()[-1]["model"]["version"] == 2
        assert agent.proc.poll() is None
    finally:
        pub.close()
        scada.close()
        assert agent.stop() == 0


@pytest.mark.timeout(60)
def test_unwritable_model_store_keeps_the_agent_running_and_recovers(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The models directory cannot be created (a regular file is in the way, which stops root
    too): fits fail and say so, alarms of nothing are invented, and once the file is gone the
    next training window fits and serves."""
    cfg = agent_config(tmp_path, mosquitto)
    state = Path(cfg["state_dir"])
    state.mkdir(parents=True)
    (state / "models").write_text("not a directory")
    agent = AgentProcess(tmp_path, cfg).start()
    scada = Collector(mosquitto, "edge/gw-test/alerts/#", clean=True)
    pub = PacedPublisher(mosquitto)
    try:
        agent.wait_connected()
        pub.publish_chunk(train_rows("plant/l1/m1/temp"))
        agent.wait_log("fit failed for series 'm1/temp'", 20)
        assert agent.proc.poll() is None
        (state / "models").unlink()  # the cause goes away
        # The next training window, newer than the first (older readings would be refused as stale).
        pub.publish_chunk(train_rows("plant/l1/m1/temp", seed=2, ago=150))
        wait_for(lambda: agent.models_active() == 1, 20, "a model once the store is writable")
        pub.publish_chunk([("plant/l1/m1/temp", reading(30.0, time.time()))])
        wait_for(lambda: scada.json(), 20, "an alarm")
        assert scada.json()[0]["value"] == 30.0
    finally:
        pub.close()
        scada.close()
        assert agent.stop() == 0
