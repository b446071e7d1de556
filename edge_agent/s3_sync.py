"""Offline-first model sync between the local ``ModelStore`` and S3 (boto3).

Remote layout (``root`` is ``{s3.prefix}/{gateway_id}`` for this gateway, or
``{s3.fleet_prefix}`` for models published to the whole fleet)::

    s3://{bucket}/{root}/{safe series name}/v{NNNNNN}/meta.json
                                                     /arrays.npz      (if the model has arrays)
                                                     /manifest.json   (written LAST)

``manifest.json``::

    {"format": 1, "kind": "edge-agent-model", "series": "<original series id>",
     "version": N, "gateway_id": "gw-01", "local_version": 3, "created_at": 1700000000.0,
     "files": {"meta.json": {"sha256": "<hex>", "size": 1234}, "arrays.npz": {...}}}

A remote version is only ever taken as a model when its manifest exists, parses, names a
series whose ``safe_name`` is the key's series segment, lists ``meta.json`` (and at most
``arrays.npz``), and every listed file downloads with exactly the listed size and sha256.
Anything else (a half-finished upload without manifest, a tampered object) is ignored or
counted as rejected; rejected versions are remembered by the ETags of their objects, so
they are not downloaded again unless an object changes. Nothing downloaded is unpickled:
the store validates an import by loading it (``numpy.load(allow_pickle=False)``), and a
remote series id only reaches the filesystem through ``ModelStore`` (``safe_name``).

Push. ``enqueue_push(series, version)`` (non-blocking, any thread) queues a local
version; the first ``sync_once`` also scans the store and queues every local version that
was never pushed (imported versions, recognised by ``imported_from`` in their meta, are
not pushed back). The queue lives in SQLite (``{state_dir}/s3_sync.sqlite``, WAL), so it
survives restarts and outages. A version goes to slot ``v{local version}`` unless that
slot holds something else (e.g. a model published for this gateway, or the pushes of a
replaced device), then to the next free slot; the chosen slot is recorded before the
upload, so an interrupted upload is redone into the same slot. Objects are written with
``If-None-Match: *`` (where the server supports it), so a slot written by someone else is
never overwritten; the manifest goes last, so an interrupted upload is never a model. A
version whose manifest is already there with the same checksums is not uploaded again.

Pull. For each source (fleet first, then this gateway's own prefix, so a gateway-specific
model ends up active over a fleet one published at the same time) and each remote series,
the newest valid version newer than the newest version already imported from that source
is downloaded to memory, verified, and imported with ``ModelStore.import_version``
(activated when ``s3.on_pull == "activate"``). Versions this gateway pushed itself are
never pulled back. The imported meta gains ``imported_from`` (source, remote version,
manifest sha256), so provenance survives the loss of the SQLite file.

Machine models (``edge_agent/machines/live.py``) sync the same way with a second ``S3Sync``
over the machine store: ``remote_dir=".machines"`` puts them under ``{root}/.machines/``
(a segment no series key can be: ``safe_name`` never yields a dot, and the series listing
takes only ``{root}/{key}/v{N}/{file}``), their manifests say ``"kind":
"edge-agent-machine-model"`` (each sync takes only its own kind, so a series model is never
imported as a machine's, nor the reverse), and their queue lives in its own SQLite file.

Failures. ``sync_once`` never raises: an unreachable or failing S3 aborts the pass and
is reported (``SyncReport.ok`` false); pending work stays queued. ``run_forever`` retries
with capped exponential backoff with jitter (``s3.retry_initial_s`` .. ``s3.retry_max_s``)
and otherwise syncs every ``s3.interval_s`` or when its ``wake`` event is set. The boto3
client uses ``s3.timeout_s`` connect/read timeouts and two attempts, so an outage fails
fast instead of hanging a worker thread.

Where the parts live: this module is the queue (SQLite) and the pass (what to push, what to
pull); ``s3_slots.py`` reads and writes the layout above in a bucket (bounded reads,
create-only writes, the manifest's checks); ``s3_client.py`` makes the boto3 client and
classifies its errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig
from edge_agent.model_store import META, ModelLoadError, ModelStore, safe_name
from edge_agent.s3_client import backoff_delay, looks_transient, make_client
from edge_agent.s3_slots import (
    MANIFEST,
    MANIFEST_KIND,
    MODEL_FILES,
    Bucket,
    RemoteRejected,
    listing,
    manifest_body,
    sha256,
    slot_prefix,
)
from edge_agent.safe_load import BadFile, parse_json

log = logging.getLogger("edge_agent.s3_sync")

MACHINES_DIR = ".machines"
DB_NAME = "s3_sync.sqlite"
_MAX_SLOT_ATTEMPTS = 8


class SlotConflict(Exception):
    """No free remote slot could be claimed for a local version (someone else keeps writing)."""


@dataclass
class SyncReport:
    ok: bool = True
    started_at: float = 0.0
    duration_s: float = 0.0
    pushed: int = 0
    already_remote: int = 0
    pulled: int = 0
    rejected: int = 0
    dropped: int = 0
    pending: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SyncState:
    pending: int = 0
    last_attempt_ts: float | None = None
    last_success_ts: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    pushed_total: int = 0
    pulled_total: int = 0
    rejected_total: int = 0


def _enc(series: str) -> bytes:
    return series.encode("utf-8", errors="surrogateescape")


def _dec(raw: bytes) -> str:
    return bytes(raw).decode("utf-8", errors="surrogateescape")


# ---- the sync engine -----------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS push_queue (
    series_key TEXT NOT NULL, version INTEGER NOT NULL, series BLOB NOT NULL,
    remote_version INTEGER, enqueued_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, PRIMARY KEY (series_key, version));
CREATE TABLE IF NOT EXISTS pushed (
    remote_root TEXT NOT NULL, series_key TEXT NOT NULL, version INTEGER NOT NULL,
    remote_version INTEGER NOT NULL, manifest_sha256 TEXT NOT NULL, pushed_at REAL NOT NULL,
    PRIMARY KEY (remote_root, series_key, version));
CREATE TABLE IF NOT EXISTS imported (
    source TEXT NOT NULL, series_key TEXT NOT NULL, remote_version INTEGER NOT NULL,
    local_version INTEGER, manifest_sha256 TEXT, imported_at REAL NOT NULL,
    PRIMARY KEY (source, series_key, remote_version));
CREATE TABLE IF NOT EXISTS rejected (
    source TEXT NOT NULL, series_key TEXT NOT NULL, remote_version INTEGER NOT NULL,
    fingerprint TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (source, series_key, remote_version, fingerprint));
"""


class S3Sync:
    """Push local model versions to S3 and pull published ones; see the module docstring.

    ``sync_once`` blocks (run it with ``asyncio.to_thread``); ``enqueue_push`` and
    ``state`` are cheap and safe from the event loop.
    """

    def __init__(
        self,
        cfg: AgentConfig,
        store: ModelStore,
        client_factory: Callable[[], Any] | None = None,
        *,
        db_path: str | Path | None = None,
        remote_dir: str | None = None,
        kind: str = MANIFEST_KIND,
    ) -> None:
        """``remote_dir`` and ``kind``: for the machine store (module docstring)."""
        self.cfg = cfg
        self.kind = kind
        self.s3 = cfg.s3
        self.store = store
        self.bucket = cfg.s3.bucket
        self._client_factory = client_factory or (lambda: make_client(cfg.s3))
        self._client: Any = None
        prefix = cfg.s3.prefix.strip("/")
        self.gateway_root = f"{prefix}/{cfg.gateway_id}" if prefix else cfg.gateway_id
        fleet = (cfg.s3.fleet_prefix or "").strip("/")
        self.fleet_root = fleet or None
        if remote_dir:
            self.gateway_root = f"{self.gateway_root}/{remote_dir}"
            self.fleet_root = f"{self.fleet_root}/{remote_dir}" if self.fleet_root else None
        self.db_path = Path(db_path) if db_path else cfg.state_path(DB_NAME)
        self._db: sqlite3.Connection | None = None
        self._enqueued: list[tuple[str, int]] = []
        self._lock = threading.Lock()  # guards _enqueued and _state
        self._sync_lock = threading.Lock()  # one sync pass at a time
        self._scanned = False
        self._db_pending = 0
        self._state = SyncState()

    # ---- public, cheap --------------------------------------------------------------------
    def enqueue_push(self, series: str, version: int) -> None:
        """Queue a new local version for upload. Non-blocking; persisted by the next sync.

        (Should the process die before that, the startup scan finds the version again.)
        """
        with self._lock:
            self._enqueued.append((series, int(version)))
            self._state.pending = self._db_pending + len(self._enqueued)

    def state(self) -> SyncState:
        with self._lock:
            return SyncState(**asdict(self._state))

    # Plain attributes for health/metrics (edge_agent.http reads these by name).
    @property
    def pending(self) -> int:
        return self.state().pending

    @property
    def last_success_ts(self) -> float | None:
        return self.state().last_success_ts

    @property
    def last_attempt_ts(self) -> float | None:
        return self.state().last_attempt_ts

    @property
    def last_error(self) -> str | None:
        return self.state().last_error

    @property
    def pushed_total(self) -> int:
        return self.state().pushed_total

    @property
    def pulled_total(self) -> int:
        return self.state().pulled_total

    @property
    def rejected_total(self) -> int:
        return self.state().rejected_total

    def close(self) -> None:
        with self._sync_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ---- the loop -------------------------------------------------------------------------
    def backoff_delay(self, failures: int) -> float:
        return backoff_delay(failures, self.s3.retry_initial_s, self.s3.retry_max_s)

    async def run_forever(
        self, wake: asyncio.Event, on_report: Callable[[SyncReport], Awaitable[None]] | None = None
    ) -> None:
        """Sync every ``s3.interval_s`` or when ``wake`` is set; back off while S3 fails.

        ``on_report`` runs on the loop after every pass (the agent adopts pulled models there).
        Cancel the task to stop it; a pass already running finishes in its worker thread
        (bounded by the client timeouts).
        """
        failures = 0
        while True:
            wake.clear()
            report = await asyncio.to_thread(self.sync_once)
            if on_report is not None:
                try:
                    await on_report(report)
                except Exception:
                    log.exception("after-sync hook failed")
            if report.ok:
                failures = 0
                try:
                    await asyncio.wait_for(wake.wait(), timeout=self.s3.interval_s)
                except TimeoutError:
                    pass
            else:
                failures += 1
                delay = self.backoff_delay(failures)
                log.warning("s3 sync failed (%s); retry %d in %.1fs", report.error, failures, delay)
                # Backoff is not cut short by wake: an outage must not be hammered by
                # every new model; the queued work is picked up by the retry.
                await asyncio.sleep(delay)

    # ---- one pass -------------------------------------------------------------------------
    def sync_once(self) -> SyncReport:
        """One full pass: startup scan, push the queue, pull new models. Never raises."""
        with self._sync_lock:
            report = SyncReport(started_at=time.time())
            with self._lock:
                self._state.last_attempt_ts = report.started_at
            try:
                db = self._open_db()
                if not self._scanned:
                    self._scan_store(db)
                    self._scanned = True
                self._drain_enqueued(db)
                client = self._client or self._client_factory()
                self._client = client
                bucket = Bucket(client, self.bucket)
                self._push_all(db, bucket, report)
                self._pull_all(db, bucket, report)
            except Exception as exc:  # noqa: BLE001 - any failure means "try again later"
                report.ok = False
                report.error = f"{type(exc).__name__}: {exc}"[:500]
                self._client = None  # rebuilt next time (fresh connections, credentials)
                if not looks_transient(exc):
                    log.exception("s3 sync pass failed")
            report.duration_s = time.time() - report.started_at
            try:
                self._db_pending = self._count_pending()
            except sqlite3.Error:
                pass
            with self._lock:
                st = self._state
                report.pending = self._db_pending + len(self._enqueued)
                st.pending = report.pending
                st.pushed_total += report.pushed
                st.pulled_total += report.pulled
                st.rejected_total += report.rejected
                if report.ok:
                    st.last_success_ts = report.started_at + report.duration_s
                    st.last_error = None
                    st.consecutive_failures = 0
                else:
                    st.last_error = report.error
                    st.consecutive_failures += 1
            return report

    # ---- SQLite ---------------------------------------------------------------------------
    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.db_path, timeout=10.0, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _count_pending(self) -> int:
        if self._db is None:
            return self._db_pending
        return int(self._db.execute("SELECT COUNT(*) FROM push_queue").fetchone()[0])

    def _is_pushed(self, db: sqlite3.Connection, key: str, version: int) -> bool:
        row = db.execute(
            "SELECT 1 FROM pushed WHERE remote_root=? AND series_key=? AND version=?",
            (self.gateway_root, key, version),
        ).fetchone()
        return row is not None

    def _queue(self, db: sqlite3.Connection, series: str, version: int) -> bool:
        key = safe_name(series)
        if self._is_pushed(db, key, version):
            return False
        cur = db.execute(
            "INSERT OR IGNORE INTO push_queue(series_key, version, series, enqueued_at) VALUES (?,?,?,?)",
            (key, version, _enc(series), time.time()),
        )
        return cur.rowcount > 0

    def _imported_from(self, series: str, version: int) -> dict | None:
        try:
            meta = self.store.read_meta(series, version)
        except ModelLoadError:
            return None
        src = meta.get("imported_from")
        return src if isinstance(src, dict) else None

    def _scan_store(self, db: sqlite3.Connection) -> None:
        """Queue every local version never pushed; re-learn imports from their meta."""
        queued = 0
        for series in self.store.list_series():
            key = safe_name(series)
            known = {
                r[0]
                for r in db.execute(
                    "SELECT version FROM pushed WHERE remote_root=? AND series_key=? "
                    "UNION SELECT version FROM push_queue WHERE series_key=?",
                    (self.gateway_root, key, key),
                )
            }
            for version in self.store.versions(series):
                if version in known:
                    continue
                src = self._imported_from(series, version)
                if src is not None:
                    self._record_import_from_meta(db, key, version, src)
                    continue
                queued += self._queue(db, series, version)
        if queued:
            log.info("s3 sync: startup scan queued %d local version(s) never pushed", queued)

    def _record_import_from_meta(self, db: sqlite3.Connection, key: str, local_version: int, src: dict) -> None:
        source, remote_version = src.get("source"), src.get("remote_version")
        if isinstance(source, str) and isinstance(remote_version, int):
            db.execute(
                "INSERT OR IGNORE INTO imported VALUES (?,?,?,?,?,?)",
                (source, key, remote_version, local_version, src.get("manifest_sha256"), time.time()),
            )

    def _drain_enqueued(self, db: sqlite3.Connection) -> None:
        with self._lock:
            items, self._enqueued = self._enqueued, []
        try:
            for series, version in items:
                src = self._imported_from(series, version)
                if src is not None:  # came from S3: never pushed back
                    self._record_import_from_meta(db, safe_name(series), version, src)
                    continue
                self._queue(db, series, version)
        except BaseException:
            with self._lock:
                self._enqueued[:0] = items
            raise

    # ---- push -----------------------------------------------------------------------------
    def _push_all(self, db: sqlite3.Connection, bucket: Bucket, report: SyncReport) -> None:
        rows = db.execute(
            "SELECT series_key, version, series, remote_version FROM push_queue ORDER BY enqueued_at, series_key, version"
        ).fetchall()
        for key, version, series_raw, remote_version in rows:
            series = _dec(series_raw)
            try:
                files = self._local_files(series, version)
            except FileNotFoundError:
                log.warning("s3 sync: local version %s v%d is gone; not pushing it", series, version)
                db.execute("DELETE FROM push_queue WHERE series_key=? AND version=?", (key, version))
                report.dropped += 1
                continue
            except (OSError, ModelLoadError) as exc:
                db.execute(
                    "UPDATE push_queue SET attempts=attempts+1, last_error=? WHERE series_key=? AND version=?",
                    (str(exc)[:300], key, version),
                )
                continue
            try:
                slot, manifest_sha, uploaded = self._push_one(db, bucket, key, version, series, remote_version, files)
            except SlotConflict as exc:
                db.execute(
                    "UPDATE push_queue SET attempts=attempts+1, last_error=? WHERE series_key=? AND version=?",
                    (str(exc)[:300], key, version),
                )
                continue
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "INSERT OR REPLACE INTO pushed VALUES (?,?,?,?,?,?)",
                    (self.gateway_root, key, version, slot, manifest_sha, time.time()),
                )
                db.execute("DELETE FROM push_queue WHERE series_key=? AND version=?", (key, version))
            if uploaded:
                report.pushed += 1
            else:
                report.already_remote += 1

    def _local_files(self, series: str, version: int) -> dict[str, bytes]:
        vdir = self.store.version_dir(series, version)
        if not vdir.is_dir():
            raise FileNotFoundError(str(vdir))
        src = self._imported_from(series, version)
        if src is not None:
            raise FileNotFoundError(f"{vdir} was imported from S3")
        files = {}
        for name in MODEL_FILES:
            path = vdir / name
            if path.exists():
                files[name] = path.read_bytes()
        if META not in files:
            raise ModelLoadError(f"{vdir}: no {META}")
        return files

    def _push_one(
        self,
        db: sqlite3.Connection,
        bucket: Bucket,
        key: str,
        version: int,
        series: str,
        remote_version: int | None,
        files: dict[str, bytes],
    ) -> tuple[int, str, bool]:
        """Upload one version; returns (remote slot, manifest sha256, whether anything was uploaded)."""
        entries = listing(files)
        slot = remote_version if remote_version is not None else version
        claimed = remote_version is not None
        for _ in range(_MAX_SLOT_ATTEMPTS):
            prefix = slot_prefix(self.gateway_root, key, slot)
            existing = bucket.get_manifest(prefix + MANIFEST)
            if existing is not None:
                raw, manifest = existing
                if isinstance(manifest, dict) and manifest.get("series") == series and manifest.get("files") == entries:
                    return slot, sha256(raw), False
                slot = bucket.next_free_slot(self.gateway_root, key, slot)
                claimed = False
                continue
            if not claimed:
                db.execute(
                    "UPDATE push_queue SET remote_version=? WHERE series_key=? AND version=?", (slot, key, version)
                )
                claimed = True
            if not all(bucket.put_new(prefix + name, data) for name, data in files.items()):
                slot = bucket.next_free_slot(self.gateway_root, key, slot)
                claimed = False
                continue
            body = manifest_body(self.kind, series, slot, self.cfg.gateway_id, version, entries)
            if bucket.put_new(prefix + MANIFEST, body, compare=False):
                log.info("s3 sync: pushed %s v%d to s3://%s/%s", series, version, self.bucket, prefix)
                return slot, sha256(body), True
            # Someone wrote a manifest between our check and our write: look again.
        raise SlotConflict(f"no free remote slot for {series!r} v{version} after {_MAX_SLOT_ATTEMPTS} tries")

    # ---- pull -----------------------------------------------------------------------------
    def _pull_all(self, db: sqlite3.Connection, bucket: Bucket, report: SyncReport) -> None:
        roots = ([self.fleet_root] if self.fleet_root else []) + [self.gateway_root]
        for root in roots:
            slots = bucket.list_slots(root)
            by_series: dict[str, list[int]] = {}
            for (key, version), objs in slots.items():
                if MANIFEST in objs:
                    by_series.setdefault(key, []).append(version)
            for key, versions in sorted(by_series.items()):
                self._pull_series(db, bucket, report, root, key, versions, slots)

    def _pull_series(
        self,
        db: sqlite3.Connection,
        bucket: Bucket,
        report: SyncReport,
        root: str,
        key: str,
        versions: list[int],
        slots: dict[tuple[str, int], dict[str, str]],
    ) -> None:
        hwm = db.execute(
            "SELECT MAX(remote_version) FROM imported WHERE source=? AND series_key=?", (root, key)
        ).fetchone()[0] or 0
        own = {
            r[0]
            for r in db.execute(
                "SELECT remote_version FROM pushed WHERE remote_root=? AND series_key=?", (root, key)
            )
        }
        # A slot we claimed for an upload still in the queue is ours as well.
        if root == self.gateway_root:
            own |= {
                r[0]
                for r in db.execute(
                    "SELECT remote_version FROM push_queue WHERE series_key=? AND remote_version IS NOT NULL", (key,)
                )
            }
        for version in sorted((v for v in versions if v > hwm and v not in own), reverse=True):
            fingerprint = sha256(json.dumps(sorted(slots[(key, version)].items())).encode())
            if db.execute(
                "SELECT 1 FROM rejected WHERE source=? AND series_key=? AND remote_version=? AND fingerprint=?",
                (root, key, version, fingerprint),
            ).fetchone():
                continue
            where = f"s3://{self.bucket}/{slot_prefix(root, key, version)}"
            try:
                series, files, manifest_sha = bucket.fetch_verified(root, key, version, self.kind)
                try:
                    meta = parse_json(files[META], f"{where}/{META}")
                except BadFile as exc:
                    raise RemoteRejected(str(exc)) from None
                if not isinstance(meta, dict):
                    raise RemoteRejected(f"{META} is not a JSON object")
                meta["imported_from"] = {
                    "source": root,
                    "remote_version": version,
                    "manifest_sha256": manifest_sha,
                    "uri": where,
                }
                files = {**files, META: json.dumps(meta).encode()}
                local_version = self.store.import_version(series, files, activate=self.s3.on_pull == "activate")
            except (RemoteRejected, ModelLoadError, ValueError) as exc:
                log.warning("s3 sync: rejected %s: %s", where, exc)
                db.execute(
                    "INSERT OR IGNORE INTO rejected VALUES (?,?,?,?,?,?)",
                    (root, key, version, fingerprint, str(exc)[:300], time.time()),
                )
                report.rejected += 1
                continue
            db.execute(
                "INSERT OR REPLACE INTO imported VALUES (?,?,?,?,?,?)",
                (root, key, version, local_version, manifest_sha, time.time()),
            )
            report.pulled += 1
            log.info("s3 sync: imported %s as %r v%d", where, series, local_version)
            return

