"""S3 model sync against a real S3-compatible HTTP server (moto server mode on loopback)."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config
from s3_server import FAKE_CREDENTIALS, MotoServer

from edge_agent.config import AgentConfig
from edge_agent.detectors.statistical import StatisticalDetector
from edge_agent.machine_detectors.baseline_t2 import BaselineT2Detector
from edge_agent.model_store import ModelStore, safe_name
from edge_agent.s3_client import backoff_delay
from edge_agent.s3_slots import MACHINE_MANIFEST_KIND, MANIFEST
from edge_agent.s3_sync import MACHINES_DIR, S3Sync

SERIES = ["m1/temp", "line 2/päd.pressure"]


# ---- fixtures and helpers ------------------------------------------------------------------
@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    for k, v in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def raw_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )


@pytest.fixture
def bucket(moto) -> str:
    name = f"models-{uuid.uuid4().hex[:12]}"
    raw_client(moto.endpoint_url).create_bucket(Bucket=name)
    return name


def make_cfg(state_dir: Path, endpoint: str, bucket: str, gateway_id: str = "gw-07", **s3) -> AgentConfig:
    opts = {
        "enabled": True,
        "bucket": bucket,
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "timeout_s": 2.0,
        "retry_initial_s": 0.05,
        "retry_max_s": 0.4,
        "interval_s": 0.2,
    }
    opts.update(s3)
    return AgentConfig.model_validate({"gateway_id": gateway_id, "state_dir": str(state_dir), "s3": opts})


class CountingClient:
    """A real boto3 client; counts successful put_object calls per key, in order."""

    def __init__(self, client, hook=None):
        self._client = client
        self.puts: list[str] = []
        self.gets = 0
        self.hook = hook

    def put_object(self, **kw):
        if self.hook:
            self.hook(kw["Key"])
        resp = self._client.put_object(**kw)
        self.puts.append(kw["Key"])
        return resp

    def get_object(self, **kw):
        self.gets += 1
        return self._client.get_object(**kw)

    def __getattr__(self, name):
        return getattr(self._client, name)


class Gateway:
    """One device: a store, its state dir and an S3Sync with a counting client."""

    def __init__(self, root: Path, endpoint: str, bucket: str, gateway_id: str = "gw-07", **s3) -> None:
        self.root = root
        self.endpoint = endpoint
        self.store = ModelStore(root / "state" / "models", fsync=False)
        self.cfg = make_cfg(root / "state", endpoint, bucket, gateway_id, **s3)
        self.clients: list[CountingClient] = []
        self.hook = None
        self.sync = self.new_sync()

    def factory(self):
        from edge_agent.s3_client import make_client

        c = CountingClient(make_client(self.cfg.s3), self.hook)
        self.clients.append(c)
        return c

    def new_sync(self) -> S3Sync:
        return S3Sync(self.cfg, self.store, client_factory=self.factory)

    @property
    def puts(self) -> list[str]:
        return [k for c in self.clients for k in c.puts]

    def train(self, series: str, mean: float) -> int:
        d = StatisticalDetector(k=3.0)
        d.fit(np.array([mean - 1, mean, mean + 1]))
        return self.store.save(series, d, n_samples=4).version


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def model_with_arrays(store: ModelStore, series: str) -> int:
    """A local version that has an arrays.npz (the statistical detector ignores it on load)."""
    meta = {"format": 1, "detector": "statistical", "params": {"k": 4.0, "mean": 1.5, "std": 0.5}, "source": "local"}
    files = {"meta.json": json.dumps(meta).encode(), "arrays.npz": npz_bytes(w=np.arange(10.0))}
    return store.import_version(series, files, activate=True)


def bucket_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    c = raw_client(endpoint)
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = c.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def manifests(objs: dict[str, bytes]) -> dict[str, dict]:
    return {k: json.loads(v) for k, v in objs.items() if k.endswith("/" + MANIFEST)}


# ---- push ----------------------------------------------------------------------------------
def test_push_uploads_files_then_manifest_with_checksums(tmp_path, moto, bucket):
    import hashlib

    gw = Gateway(tmp_path / "a", moto.endpoint_url, bucket)
    gw.train(SERIES[0], 10.0)
    gw.train(SERIES[0], 11.0)
    model_with_arrays(gw.store, SERIES[1])

    report = gw.sync.sync_once()
    assert report.ok, report.error
    assert (report.pushed, report.pulled, report.rejected, report.pending) == (3, 0, 0, 0)
    assert gw.sync.pending == 0 and gw.sync.last_error is None and gw.sync.last_success_ts

    objs = bucket_objects(moto.endpoint_url, bucket)
    k0, k1 = safe_name(SERIES[0]), safe_name(SERIES[1])
    assert set(objs) == {
        f"edge-agent/gw-07/{k0}/v000001/meta.json",
        f"edge-agent/gw-07/{k0}/v000001/manifest.json",
        f"edge-agent/gw-07/{k0}/v000002/meta.json",
        f"edge-agent/gw-07/{k0}/v000002/manifest.json",
        f"edge-agent/gw-07/{k1}/v000001/meta.json",
        f"edge-agent/gw-07/{k1}/v000001/arrays.npz",
        f"edge-agent/gw-07/{k1}/v000001/manifest.json",
    }
    for key, man in manifests(objs).items():
        slot = key.rsplit("/", 1)[0]
        series = SERIES[0] if f"/{k0}/" in key else SERIES[1]
        assert man["series"] == series and man["gateway_id"] == "gw-07"
        vdir = gw.store.version_dir(series, man["local_version"])
        for name, entry in man["files"].items():
            data = objs[f"{slot}/{name}"]
            assert data == (vdir / name).read_bytes()
            assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        assert set(man["files"]) == {p.name for p in vdir.iterdir()}
    # The manifest is the last object written in every version directory.
    for slot in {k.rsplit("/", 1)[0] for k in gw.puts}:
        in_slot = [k for k in gw.puts if k.startswith(slot + "/")]
        assert in_slot[-1].endswith(MANIFEST)


def test_sync_twice_uploads_nothing_twice_even_after_losing_sync_state(tmp_path, moto, bucket):
    gw = Gateway(tmp_path / "a", moto.endpoint_url, bucket)
    gw.train(SERIES[0], 10.0)
    model_with_arrays(gw.store, SERIES[1])
    assert gw.sync.sync_once().pushed == 2
    first = list(gw.puts)
    assert len(first) == 5

    again = gw.sync.sync_once()
    assert again.ok and (again.pushed, again.already_remote, again.pulled) == (0, 0, 0)
    assert gw.puts == first

    # Re-enqueueing (as the agent might) and even losing the SQLite state: the remote
    # manifest with the same checksums is recognised, nothing is uploaded again.
    gw.sync.enqueue_push(SERIES[0], 1)
    assert gw.sync.sync_once().pushed == 0
    gw.sync.close()
    for f in (tmp_path / "a" / "state").glob("s3_sync.sqlite*"):
        f.unlink()
    fresh = gw.new_sync()
    report = fresh.sync_once()
    assert report.ok and report.pushed == 0 and report.already_remote == 2
    assert gw.puts == first
    assert Counter(gw.puts).most_common(1)[0][1] == 1


# ---- pull ----------------------------------------------------------------------------------
def test_pull_models_pushed_by_another_device_of_this_gateway(tmp_path, moto, bucket):
    old = Gateway(tmp_path / "old", moto.endpoint_url, bucket)
    old.train(SERIES[0], 10.0)
    old.train(SERIES[0], 20.0)
    model_with_arrays(old.store, SERIES[1])
    assert old.sync.sync_once().pushed == 3

    # A replacement device for the same gateway id starts empty and pulls the newest models.
    new = Gateway(tmp_path / "new", moto.endpoint_url, bucket)
    report = new.sync.sync_once()
    assert report.ok and (report.pulled, report.rejected, report.pushed) == (2, 0, 0)
    assert sorted(new.store.list_series()) == sorted(SERIES)
    model, errors = new.store.load_active(SERIES[0])
    assert not errors and model.detector.mean == pytest.approx(20.0)
    assert model.meta["imported_from"]["remote_version"] == 2
    assert new.store.versions(SERIES[0]) == [1]  # only the newest, not every old one
    assert (new.store.version_dir(SERIES[1], 1) / "arrays.npz").read_bytes() == (
        old.store.version_dir(SERIES[1], 1) / "arrays.npz"
    ).read_bytes()

    # Nothing is pulled twice, and imported versions are never pushed back.
    again = new.sync.sync_once()
    assert (again.pulled, again.pushed) == (0, 0) and new.puts == []
    restarted = new.new_sync()  # the startup scan must also not push imported versions
    assert restarted.sync_once().pushed == 0 and new.puts == []

    # The old device's own pushes are not pulled back into its own store.
    assert old.sync.sync_once().pulled == 0 and old.store.versions(SERIES[0]) == [1, 2]

    # New device trains its own v2: slot v000002 belongs to the old device, so it takes
    # the next free slot and leaves the old one untouched.
    before = bucket_objects(moto.endpoint_url, bucket)
    assert new.train(SERIES[0], 30.0) == 2
    new.sync.enqueue_push(SERIES[0], 2)
    assert new.sync.sync_once().pushed == 1
    after = bucket_objects(moto.endpoint_url, bucket)
    assert all(after[k] == v for k, v in before.items())
    k0 = safe_name(SERIES[0])
    man = json.loads(after[f"edge-agent/gw-07/{k0}/v000003/manifest.json"])
    assert man["local_version"] == 2
    # ...which the old device now pulls as a new model.
    r = old.sync.sync_once()
    assert r.pulled == 1
    model, _ = old.store.load_active(SERIES[0])
    assert model.detector.mean == pytest.approx(30.0) and model.version == 3


def test_pull_from_fleet_prefix_activate_and_stage(tmp_path, moto, bucket):
    # A publisher whose root is "fleet/models" (prefix "fleet", id "models").
    pub = Gateway(tmp_path / "pub", moto.endpoint_url, bucket, gateway_id="models", prefix="fleet")
    pub.train(SERIES[0], 5.0)
    assert pub.sync.sync_once().pushed == 1

    gw = Gateway(tmp_path / "gw", moto.endpoint_url, bucket, fleet_prefix="fleet/models/")
    local = gw.train(SERIES[0], 100.0)
    assert gw.sync.sync_once().pulled == 1
    assert gw.store.versions(SERIES[0]) == [local, local + 1]
    model, _ = gw.store.load_active(SERIES[0])
    assert model.detector.mean == pytest.approx(5.0)
    assert model.meta["imported_from"]["source"] == "fleet/models"

    staged = Gateway(tmp_path / "st", moto.endpoint_url, bucket, gateway_id="gw-08",
                     fleet_prefix="fleet/models", on_pull="stage")
    staged.train(SERIES[0], 100.0)
    assert staged.sync.sync_once().pulled == 1
    assert staged.store.versions(SERIES[0]) == [1, 2] and staged.store.active_version(SERIES[0]) == 1

    # A newer fleet model is pulled; an unchanged fleet is not.
    assert gw.sync.sync_once().pulled == 0
    pub.sync.enqueue_push(SERIES[0], pub.train(SERIES[0], 7.0))
    assert pub.sync.sync_once().pushed == 1
    assert gw.sync.sync_once().pulled == 1
    assert gw.store.load_active(SERIES[0])[0].detector.mean == pytest.approx(7.0)


@pytest.mark.parametrize("tamper", ["meta_bytes", "arrays_missing", "manifest_series", "manifest_extra_file",
                                    "not_a_model", "manifest_garbage", "meta_deep", "manifest_deep", "arrays_bomb"])
def test_tampered_versions_are_rejected_and_counted(tmp_path, moto, bucket, tamper):
    import hashlib

    a = Gateway(tmp_path / "a", moto.endpoint_url, bucket)
    model_with_arrays(a.store, SERIES[1])
    assert a.sync.sync_once().pushed == 1
    c = raw_client(moto.endpoint_url)
    slot = f"edge-agent/gw-07/{safe_name(SERIES[1])}/v000001"
    original = bucket_objects(moto.endpoint_url, bucket)
    man = json.loads(original[f"{slot}/manifest.json"])
    if tamper == "meta_bytes":
        c.put_object(Bucket=bucket, Key=f"{slot}/meta.json", Body=b'{"detector": "statistical", "evil": 1}')
    elif tamper == "arrays_missing":
        c.delete_object(Bucket=bucket, Key=f"{slot}/arrays.npz")
    elif tamper == "manifest_series":
        man["series"] = "other/series"
        c.put_object(Bucket=bucket, Key=f"{slot}/manifest.json", Body=json.dumps(man).encode())
    elif tamper == "manifest_extra_file":
        man["files"]["../../../escape"] = man["files"]["meta.json"]
        c.put_object(Bucket=bucket, Key=f"{slot}/manifest.json", Body=json.dumps(man).encode())
    elif tamper == "not_a_model":  # consistent checksums, but not a loadable model
        bad = b'{"detector": "no-such-detector", "params": {}}'
        c.put_object(Bucket=bucket, Key=f"{slot}/meta.json", Body=bad)
        man["files"]["meta.json"] = {"sha256": hashlib.sha256(bad).hexdigest(), "size": len(bad)}
        c.put_object(Bucket=bucket, Key=f"{slot}/manifest.json", Body=json.dumps(man).encode())
    elif tamper == "manifest_garbage":
        c.put_object(Bucket=bucket, Key=f"{slot}/manifest.json", Body=b"\x80\x04not json")
    elif tamper in ("meta_deep", "arrays_bomb"):  # issue 15: hostile files with consistent checksums
        from faults import deep_json, npz_bomb

        name, bad = ("meta.json", deep_json(100_000)) if tamper == "meta_deep" else ("arrays.npz", npz_bomb(gib=1.0))
        c.put_object(Bucket=bucket, Key=f"{slot}/{name}", Body=bad)
        man["files"][name] = {"sha256": hashlib.sha256(bad).hexdigest(), "size": len(bad)}
        c.put_object(Bucket=bucket, Key=f"{slot}/manifest.json", Body=json.dumps(man).encode())
    elif tamper == "manifest_deep":
        from faults import deep_json

        c.put_object(Bucket=bucket, Key=f"{slot}/manifest.json", Body=deep_json(100_000))
    import resource

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    b = Gateway(tmp_path / "b", moto.endpoint_url, bucket)
    report = b.sync.sync_once()
    assert report.ok and (report.pulled, report.rejected) == (0, 1)
    # (A failed import may leave an empty series directory, but never a version.)
    assert all(b.store.versions(s) == [] for s in b.store.list_series())
    assert not (tmp_path / "escape").exists()
    assert b.sync.rejected_total == 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200_000, "a pulled file inflated in memory"
    # Not downloaded and counted again while nothing changes...
    gets = sum(x.gets for x in b.clients)
    assert b.sync.sync_once().rejected == 0
    assert sum(x.gets for x in b.clients) == gets
    # ...but retried when the objects change (here: the original objects are restored).
    for key in [k for k in bucket_objects(moto.endpoint_url, bucket) if k.startswith(slot + "/")]:
        c.delete_object(Bucket=bucket, Key=key)
    for key, body in original.items():
        c.put_object(Bucket=bucket, Key=key, Body=body)
    assert b.sync.sync_once().pulled == 1
    assert b.store.load_active(SERIES[1])[0].detector.k == 4.0


def test_partial_upload_is_never_a_model_and_is_redone(tmp_path, moto, bucket):
    a = Gateway(tmp_path / "a", moto.endpoint_url, bucket)
    a.train(SERIES[0], 10.0)

    def die_before_manifest(key):
        if key.endswith(MANIFEST):
            raise ConnectionError("link dropped")

    a.hook = die_before_manifest
    report = a.sync.sync_once()
    assert not report.ok and "link dropped" in report.error and report.pending == 1
    objs = bucket_objects(moto.endpoint_url, bucket)
    assert list(objs) == [f"edge-agent/gw-07/{safe_name(SERIES[0])}/v000001/meta.json"]

    b = Gateway(tmp_path / "b", moto.endpoint_url, bucket)
    r = b.sync.sync_once()
    assert r.ok and (r.pulled, r.rejected) == (0, 0) and b.store.list_series() == []

    a.hook = None
    a.sync = a.new_sync()  # also across a restart
    r = a.sync.sync_once()
    assert r.ok and r.pushed == 1 and r.pending == 0
    objs = bucket_objects(moto.endpoint_url, bucket)
    assert len(objs) == 2 and len(manifests(objs)) == 1
    assert b.sync.sync_once().pulled == 1


# ---- credentials ---------------------------------------------------------------------------
def test_credentials_file_and_systemd_credential(tmp_path, moto, bucket, monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k)
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "s3").write_text("[default]\naws_access_key_id = AKIDFROMFILE\naws_secret_access_key = s3cr3t\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    store = ModelStore(tmp_path / "m", fsync=False)
    cfg = make_cfg(tmp_path / "state", moto.endpoint_url, bucket, credentials_file="credential:s3")
    sync = S3Sync(cfg, store)
    assert sync.sync_once().ok
    assert sync._client._request_signer._credentials.access_key == "AKIDFROMFILE"

    (tmp_path / "creds" / "bad").write_text("aws_access_key_id = x\n")
    bad = S3Sync(make_cfg(tmp_path / "s2", moto.endpoint_url, bucket, credentials_file="credential:bad"), store)
    r = bad.sync_once()
    assert not r.ok and "credentials" in r.error and bad.last_error


# ---- offline-first -------------------------------------------------------------------------
def test_backoff_is_exponential_capped_and_jittered():
    assert backoff_delay(1, 1.0, 300.0, rng=lambda: 0.0) == 0.5
    assert backoff_delay(1, 1.0, 300.0, rng=lambda: 1.0) == 1.0
    assert backoff_delay(4, 1.0, 300.0, rng=lambda: 1.0) == 8.0
    assert backoff_delay(40, 1.0, 300.0, rng=lambda: 1.0) == 300.0
    assert backoff_delay(10_000, 1.0, 300.0, rng=lambda: 0.0) == 150.0
    delays = {backoff_delay(3, 1.0, 300.0) for _ in range(50)}
    assert len(delays) > 1 and all(2.0 <= d <= 4.0 for d in delays)


def test_outage_pending_persists_and_everything_converges_exactly_once(tmp_path):
    server = MotoServer(log_path=str(tmp_path / "moto.log")).start()
    bucket = "fleet-models"
    try:
        raw_client(server.endpoint_url).create_bucket(Bucket=bucket)
        gw = Gateway(tmp_path / "gw", server.endpoint_url, bucket)
        gw.train(SERIES[0], 1.0)
        gw.train(SERIES[0], 2.0)
        model_with_arrays(gw.store, SERIES[1])

        # S3 dies in the middle of a pass: after the first object of the first upload.
        calls = Counter()

        def kill_after_first(key):
            calls["put"] += 1
            if calls["put"] == 2:
                server.stop()

        gw.hook = kill_after_first
        r = gw.sync.sync_once()
        assert not r.ok and r.pushed == 0 and r.pending == 3
        gw.hook = None

        # While S3 is down: passes fail fast and nothing is lost, also across a restart.
        t0 = time.monotonic()
        r = gw.sync.sync_once()
        assert not r.ok and r.pending == 3 and time.monotonic() - t0 < 10
        gw.sync.close()
        gw.sync = gw.new_sync()
        gw.train(SERIES[1], 3.0)  # trained while offline, never enqueued: the startup scan finds it
        gw.train(SERIES[0], 4.0)
        gw.sync.enqueue_push(SERIES[0], 3)  # (the agent enqueues new versions; so does the scan)
        r = gw.sync.sync_once()
        assert not r.ok and r.pending == 5
        assert gw.sync.last_error and gw.sync.state().consecutive_failures == 1

        puts_before = [0]

        async def scenario():
            wake = asyncio.Event()
            task = asyncio.create_task(gw.sync.run_forever(wake))
            try:
                deadline = time.monotonic() + 15
                while gw.sync.state().consecutive_failures < 4:
                    assert time.monotonic() < deadline, "run_forever does not retry"
                    await asyncio.sleep(0.05)
                assert gw.sync.pending == 5
                # S3 comes back (empty: moto keeps state in memory), the bucket is recreated.
                puts_before[0] = len(gw.puts)
                await asyncio.to_thread(server.start)
                await asyncio.to_thread(raw_client(server.endpoint_url).create_bucket, Bucket=bucket)
                deadline = time.monotonic() + 20
                while not (gw.sync.pending == 0 and gw.sync.last_error is None):
                    assert time.monotonic() < deadline, f"did not converge: {gw.sync.state()}"
                    await asyncio.sleep(0.05)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

        asyncio.run(asyncio.wait_for(scenario(), timeout=60))

        # Every local version is remote exactly once; no key was written twice.
        objs = bucket_objects(server.endpoint_url, bucket)
        got = Counter((m["series"], m["local_version"]) for m in manifests(objs).values())
        local = Counter((s, v) for s in SERIES for v in gw.store.versions(s))
        assert got == local and len(local) == 5
        post = gw.puts[puts_before[0]:]
        assert len(post) == len(set(post)) == len(objs)
        assert gw.sync.sync_once().pushed == 0 and gw.sync.pending == 0
    finally:
        server.stop()


# ---- machine models (machines/live.py: a second S3Sync over the machine store) -------------
class MachineGateway(Gateway):
    """A device with machines: its series sync and its machine sync, as the agent runs them."""

    def __init__(self, root: Path, endpoint: str, bucket: str, gateway_id: str = "gw-07", **s3) -> None:
        self.machines = ModelStore.for_machines(root / "state" / "machine_models", fsync=False)
        super().__init__(root, endpoint, bucket, gateway_id, **s3)
        self.msync = S3Sync(self.cfg, self.machines, client_factory=self.factory, db_path=self.cfg.state_path("s3_sync_machines.sqlite"),
                            remote_dir=MACHINES_DIR, kind=MACHINE_MANIFEST_KIND)

    def train_machine(self, machine: str, level: float) -> int:
        rng = np.random.default_rng(int(level))
        load = np.cumsum(rng.normal(0, 0.05, 400))
        rows = np.column_stack([level + load + rng.normal(0, 0.01, 400), 5 + 2 * load + rng.normal(0, 0.02, 400)])
        det = BaselineT2Detector()
        det.fit(rows, np.arange(400.0), ["flow", "current"])
        return self.machines.save(machine, det, n_samples=400).version


def test_machine_models_sync_apart_from_the_series(tmp_path, moto, bucket):
    pub = MachineGateway(tmp_path / "pub", moto.endpoint_url, bucket, gateway_id="models", prefix="fleet")
    pub.train(SERIES[0], 5.0)
    pub.train_machine("line1/p7", 10.0)
    assert pub.sync.sync_once().pushed == 1 and pub.msync.sync_once().pushed == 1
    found = manifests(bucket_objects(moto.endpoint_url, bucket))
    machine_manifest = found[f"fleet/models/.machines/{safe_name('line1/p7')}/v000001/manifest.json"]
    assert machine_manifest["kind"] == MACHINE_MANIFEST_KIND and machine_manifest["series"] == "line1/p7"
    assert found[f"fleet/models/{safe_name(SERIES[0])}/v000001/manifest.json"]["kind"] == "edge-agent-model"

    # Each sync pulls its own kind only: the machine is never a series, nor the reverse.
    gw = MachineGateway(tmp_path / "gw", moto.endpoint_url, bucket, fleet_prefix="fleet/models")
    assert gw.sync.sync_once().pulled == 1 and gw.msync.sync_once().pulled == 1
    assert gw.store.list_series() == [SERIES[0]] and gw.machines.list_series() == ["line1/p7"]
    model, errors = gw.machines.load_active("line1/p7")
    assert errors == [] and model is not None and model.detector.name == "baseline_t2"
    assert model.detector.sensors == ["flow", "current"]
    assert model.meta["imported_from"]["source"] == "fleet/models/.machines"
    # The pulled machine model is not pushed back; a new local one is, under .machines/.
    assert gw.msync.sync_once().pushed == 0
    gw.msync.enqueue_push("line1/p7", gw.train_machine("line1/p7", 20.0))
    assert gw.msync.sync_once().pushed == 1
    assert f"edge-agent/gw-07/.machines/{safe_name('line1/p7')}/v000002/manifest.json" in bucket_objects(moto.endpoint_url, bucket)

    # A series model put where machines are published is refused by its manifest's kind.
    c = raw_client(moto.endpoint_url)
    for name, body in bucket_objects(moto.endpoint_url, bucket).items():
        if name.startswith(f"fleet/models/{safe_name(SERIES[0])}/"):
            c.put_object(Bucket=bucket, Key=name.replace("fleet/models/", "fleet/models/.machines/"), Body=body)
    report = gw.msync.sync_once()
    assert report.pulled == 0 and report.rejected == 1
    assert gw.machines.list_series() == ["line1/p7"]
