"""The running agent and S3: new versions are pushed as they are trained, fleet models are
pulled and served without a restart, and the `sync` command runs a pass on demand."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config
from helpers import AgentProcess, Mosquitto, Publisher, Subscriber, agent_config, wait_for
from s3_server import FAKE_CREDENTIALS, MotoServer

from edge_agent.command_auth import sign
from edge_agent.config import AgentConfig
from edge_agent.detectors.statistical import StatisticalDetector
from edge_agent.model_store import ModelStore
from edge_agent.s3_sync import S3Sync

KEY = b"k" * 32


@pytest.mark.timeout(120)
def test_agent_pushes_versions_and_serves_pulled_fleet_models(tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    with MotoServer() as moto:
        s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
        bucket = f"models-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        s3cfg = {"enabled": True, "bucket": bucket, "endpoint_url": moto.endpoint_url, "region": "us-east-1",
                 "fleet_prefix": "fleet/models", "interval_s": 0.5, "retry_initial_s": 0.2, "retry_max_s": 1.0, "timeout_s": 2.0}
        key_file = tmp_path / "cmd.key"
        key_file.write_bytes(KEY)
        agent = AgentProcess(tmp_path, agent_config(tmp_path, mosquitto, s3=s3cfg, **{"commands.key_file": str(key_file)}),
                             env={k: v for k, v in os.environ.items() if k.startswith("AWS_")}).start()
        pub = Publisher(mosquitto)
        alarms = Subscriber(mosquitto, "edge/gw-test/alerts/#")
        replies = Subscriber(mosquitto, "edge/gw-test/cmd/+/response")
        try:
            agent.wait_connected()
            for v in np.random.default_rng(0).uniform(-1, 1, 100):
                pub.reading("plant/l1/m1/temp", float(v), time.time()).wait_for_publish(10)

            def keys() -> list[str]:
                return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]

            wait_for(lambda: "edge-agent/gw-test/m1%2Ftemp/v000001/manifest.json" in keys(), 20, "v1 pushed to S3")

            # The control room publishes a model for the whole fleet: mean 100.
            publisher_store = ModelStore(tmp_path / "publisher" / "models")
            det = StatisticalDetector(k=3)
            det.fit(np.array([99.0, 100.0, 101.0]))
            publisher_store.save("m1/temp", det, n_samples=3)
            pcfg = AgentConfig.model_validate({"gateway_id": "models", "state_dir": str(tmp_path / "publisher"),
                                               "s3": {**s3cfg, "prefix": "fleet", "fleet_prefix": None}})
            report = S3Sync(pcfg, publisher_store).sync_once()
            assert report.ok and report.pushed == 1, report

            store = ModelStore(agent.state_dir / "models")
            wait_for(lambda: store.active_version("m1/temp") == 2, 20, "fleet model pulled as v2")
            # 0.0 is normal for the local v1 model and far off for the fleet model: an alarm
            # stamped v2 shows the running agent serves the pulled model, with no restart.
            time.sleep(0.5)
            pub.reading("plant/l1/m1/temp", 0.0, time.time()).wait_for_publish(10)
            wait_for(lambda: alarms.json(), 10, "alarm from the pulled model")
            assert alarms.json()[0]["model"]["version"] == 2
            assert store.read_meta("m1/temp", 2).get("imported_from")

            pub.publish("edge/gw-test/cmd/sync", sign(KEY, "sync", {}, request_id="sync-1")).wait_for_publish(10)
            wait_for(lambda: [r for r in replies.json() if r["status"] == "done"], 20, "sync done")
            done = [r for r in replies.json() if r["status"] == "done"][0]
            assert done["result"]["ok"] is True and done["result"]["pending"] == 0
            # Nothing was uploaded twice, and the pulled model was not pushed back.
            pushed = [k for k in keys() if k.startswith("edge-agent/gw-test/")]
            assert sorted(pushed) == sorted(f"edge-agent/gw-test/m1%2Ftemp/v000001/{f}" for f in ("meta.json", "manifest.json"))
        finally:
            pub.close()
            alarms.close()
            replies.close()
            assert agent.stop() == 0
