"""The remote side of model sync: slots, manifests, verified reads and create-only writes.

One bucket holds models at ``{root}/{series key}/v{NNNNNN}/{file}`` (the layout and the
manifest format are in ``s3_sync.py``'s docstring). This module is the format's reader and
writer and nothing else: which versions to push or pull, and the queue that remembers them,
are ``s3_sync.py``'s.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from edge_agent.model_store import ARRAYS, META, safe_name
from edge_agent.s3_client import is_no_such_key, is_precondition_failed
from edge_agent.safe_load import MAX_JSON_BYTES, MAX_NPZ_FILE_BYTES, BadFile, parse_json

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
MANIFEST_KIND = "edge-agent-model"
MACHINE_MANIFEST_KIND = "edge-agent-machine-model"
MODEL_FILES = (META, ARRAYS)
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_FILE_BYTES = 512 * 1024 * 1024
_VERSION_SEGMENT = re.compile(r"^v(\d{1,9})$")
_SERIES_SEGMENT = re.compile(r"^[A-Za-z0-9_%~-]{1,200}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RemoteRejected(Exception):
    """A remote version that must not be taken as a model."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def slot_prefix(root: str, key: str, remote_version: int) -> str:
    return f"{root}/{key}/v{remote_version:06d}/"


def listing(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """The manifest's ``files`` entry for these files."""
    return {name: {"sha256": sha256(data), "size": len(data)} for name, data in files.items()}


def manifest_body(kind: str, series: str, slot: int, gateway_id: str, local_version: int,
                  files: dict[str, dict[str, Any]]) -> bytes:
    manifest = {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "series": series,
        "version": slot,
        "gateway_id": gateway_id,
        "local_version": local_version,
        "created_at": time.time(),
        "files": files,
    }
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


class Bucket:
    """Reads bounded before they are made, writes that never overwrite, in one bucket."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    def put_new(self, key: str, data: bytes, compare: bool = True) -> bool:
        """Create ``key`` unless it exists. True when it now holds ``data``.

        With ``compare`` an existing object with the same bytes counts as success (our own
        interrupted upload being redone).
        """
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            if not is_precondition_failed(exc):
                raise
        if not compare:
            return False
        try:
            current = self.get_bytes(key, len(data))
        except RemoteRejected:
            return False
        return current is not None and current == data

    def next_free_slot(self, root: str, key: str, current: int) -> int:
        highest = current
        for (_, v), _objs in self.list_slots(root, f"{key}/").items():
            highest = max(highest, v)
        return highest + 1

    def get_bytes(self, key: str, limit: int) -> bytes | None:
        """The object's bytes, None if it does not exist; RemoteRejected if larger than ``limit``."""
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if is_no_such_key(exc):
                return None
            raise
        body = resp["Body"]
        try:
            length = resp.get("ContentLength")
            if length is not None and length > limit:
                raise RemoteRejected(f"{key}: {length} bytes, more than expected {limit}")
            data = body.read(limit + 1)
        finally:
            body.close()
        if len(data) > limit:
            raise RemoteRejected(f"{key}: more than {limit} bytes")
        return data

    def get_manifest(self, key: str) -> tuple[bytes, Any] | None:
        """(raw bytes, parsed JSON or None if it is not JSON), or None if there is none."""
        try:
            raw = self.get_bytes(key, MAX_MANIFEST_BYTES)
        except RemoteRejected:
            return b"", None
        if raw is None:
            return None
        try:
            return raw, parse_json(raw, key, MAX_MANIFEST_BYTES)
        except BadFile:
            return raw, None

    def list_slots(self, root: str, under: str = "") -> dict[tuple[str, int], dict[str, str]]:
        """``{(series_key, version): {file name: etag}}`` for well-formed keys below ``root``."""
        slots: dict[tuple[str, int], dict[str, str]] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        base = f"{root}/"
        for page in paginator.paginate(Bucket=self.name, Prefix=base + under):
            for obj in page.get("Contents", []) or []:
                parts = obj["Key"][len(base):].split("/")
                if len(parts) != 3:
                    continue
                key, vseg, name = parts
                m = _VERSION_SEGMENT.match(vseg)
                if not m or not _SERIES_SEGMENT.match(key):
                    continue
                slots.setdefault((key, int(m.group(1))), {})[name] = str(obj.get("ETag", ""))
        return slots

    def fetch_verified(self, root: str, key: str, version: int, kind: str) -> tuple[str, dict[str, bytes], str]:
        """(series id, {file name: bytes}, manifest sha256) of a slot whose every file checks out."""
        prefix = slot_prefix(root, key, version)
        got = self.get_manifest(prefix + MANIFEST)
        if got is None:
            raise RemoteRejected("manifest disappeared")
        raw, manifest = got
        if not isinstance(manifest, dict):
            raise RemoteRejected("manifest is not a JSON object")
        if manifest.get("format") != MANIFEST_FORMAT:
            raise RemoteRejected(f"unknown manifest format {manifest.get('format')!r}")
        if manifest.get("kind", MANIFEST_KIND) != kind:
            raise RemoteRejected(f"manifest kind {str(manifest.get('kind'))[:40]!r} is not {kind!r}")
        series = manifest.get("series")
        if not isinstance(series, str) or safe_name(series) != key:
            raise RemoteRejected("manifest series does not match the key")
        entries = manifest.get("files")
        if not isinstance(entries, dict) or META not in entries or not set(entries) <= set(MODEL_FILES):
            raise RemoteRejected(f"manifest must list {META} and at most {ARRAYS}")
        files: dict[str, bytes] = {}
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                raise RemoteRejected(f"bad manifest entry for {name}")
            digest, size = entry.get("sha256"), entry.get("size")
            if not (isinstance(digest, str) and _SHA256.match(digest)):
                raise RemoteRejected(f"bad sha256 for {name}")
            # The same bounds as a local load (safe_load): nothing larger is fetched at all.
            limit = MAX_JSON_BYTES if name == META else MAX_NPZ_FILE_BYTES
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= min(limit, MAX_FILE_BYTES):
                raise RemoteRejected(f"bad size for {name}: {size!r} (at most {min(limit, MAX_FILE_BYTES)})")
            data = self.get_bytes(prefix + name, size)
            if data is None:
                raise RemoteRejected(f"{name} is missing")
            if len(data) != size or sha256(data) != digest:
                raise RemoteRejected(f"checksum mismatch for {name}")
            files[name] = data
        return series, files, sha256(raw)
