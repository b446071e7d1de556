"""Versioned per-series model store on the local filesystem.

Layout under ``<state_dir>/models``::

    <safe series name>/
        series.json          {"series": "<original id>"}
        v000001/meta.json    version, detector, params, trained_at, samples, stats, agent version
        v000001/arrays.npz   numpy arrays of the fitted model (allow_pickle=False)
        v000002/...
        ACTIVE               the active version number

Versions are immutable. A version directory is built under a temporary name, every file
and the directory are fsynced, then it is renamed into place and the parent is fsynced, so
a crash leaves either the whole version or nothing. ``ACTIVE`` is replaced the same way.

A crash or a full disk at any step leaves a loadable store. ``series.json`` is written
whenever it is missing, not only with the directory: a fit that failed with ENOSPC after the
directory was made left it without one, later versions went there, and after a restart the
series was skipped without a word. A directory whose ``series.json`` is missing or corrupt is
recovered from its versions' ``meta.json`` (which name the series) when the agent starts, and
reported otherwise. A missing ``ACTIVE`` beside local versions (a crash between a version and
its activation) serves the newest local version and writes its ``ACTIVE``, the fit's last step;
a garbage ``ACTIVE`` serves the newest version that loads, and stays for a person to look at
(it was corrupted, not left undone); both are reported. Every file is read with the bounds of ``safe_load.py``.

Series ids come from MQTT topics and are hostile by assumption: they are never used as
paths. ``safe_name`` percent-encodes every byte outside ``[A-Za-z0-9_-]`` (so ``.``, ``/``
and NUL cannot survive) and shortens long ids with a hash.

Machine models (``edge_agent.machine_detectors``) use the same store, under their own root
and with the machine-detector registry (``ModelStore.for_machines``): a machine id is made
path-safe exactly like a series id, and a machine ``m1`` never shares a directory with a
series ``m1``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent import __version__, detectors
from edge_agent.detectors import Detector
from edge_agent.safe_load import (
    MAX_NPZ_FILE_BYTES,
    BadFile,
    load_json,
    load_npz,
    parse_json,
    read_bounded,
)

if TYPE_CHECKING:
    from edge_agent.store_scan import ScanResult

META = "meta.json"
ARRAYS = "arrays.npz"
ACTIVE = "ACTIVE"
LOCK = ".lock"
SERIES_FILE = "series.json"
FORMAT_VERSION = 1
_MAX_NAME = 120
_UNSAFE = re.compile(rb"[^A-Za-z0-9_-]")
VERSION_DIR = re.compile(r"^v(\d{6,})$")


class ModelLoadError(Exception):
    """A stored model version cannot be used (missing, corrupt, or of an unknown detector)."""


def safe_name(series_id: str) -> str:
    """A filesystem-safe, deterministic directory name for any series id."""
    raw = series_id.encode("utf-8", errors="surrogateescape")
    encoded = _UNSAFE.sub(lambda m: b"%%%02X" % m.group()[0], raw).decode("ascii")
    if not encoded:
        encoded = "%00empty"
    if len(encoded) > _MAX_NAME:
        digest = hashlib.sha256(raw).hexdigest()[:16]
        encoded = f"{encoded[:_MAX_NAME - 17]}~{digest}"
    return encoded


@dataclass
class Model:
    """A fitted detector plus the metadata that says where it came from."""

    detector: Detector
    version: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def detector_name(self) -> str:
        return self.detector.name


def listdir_or_empty(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write(path: Path, data: bytes, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        _fsync_dir(path.parent)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a stored version, bounded (safe_load.load_npz); BadFile if unusable."""
    return load_npz(path)


class ModelStore:
    def __init__(self, root: str | os.PathLike, fsync: bool = True, registry: Callable[[str], type] | None = None) -> None:
        self.root = Path(root)
        self.fsync = fsync
        # name -> detector class, for load(): per-series detectors unless told otherwise.
        self.registry = registry or detectors.detector_class
        # Fits run on a small thread pool; version numbers are allocated under this lock.
        self._lock = threading.Lock()

    @classmethod
    def for_machines(cls, root: str | os.PathLike, fsync: bool = True) -> ModelStore:
        """The store of machine models (ids are machine ids), e.g. under ``{state_dir}/machine_models``."""
        from edge_agent import machine_detectors

        return cls(root, fsync=fsync, registry=machine_detectors.detector_class)

    # ---- paths -------------------------------------------------------------------------
    def series_dir(self, series_id: str) -> Path:
        path = self.root / safe_name(series_id)
        # Belt and braces: safe_name cannot produce separators, but the store never writes
        # anywhere a resolved path would leave its root.
        if path.parent != self.root:
            raise ValueError(f"series id {series_id!r} does not map inside the store")
        return path

    def version_dir(self, series_id: str, version: int) -> Path:
        return self.series_dir(series_id) / f"v{version:06d}"

    # ---- queries -----------------------------------------------------------------------
    def list_series(self) -> list[str]:
        return self.scan().series

    def scan(self, repair: bool = False) -> ScanResult:
        """Every series directory: its id, recovered or reported when its index is bad
        (store_scan.py; ``repair`` rewrites a recovered index)."""
        from edge_agent.store_scan import scan

        return scan(self, repair)

    def versions(self, series_id: str) -> list[int]:
        d = self.series_dir(series_id)
        if not d.is_dir():
            return []
        out = []
        for child in d.iterdir():
            m = VERSION_DIR.match(child.name)
            if m and child.is_dir():
                out.append(int(m.group(1)))
        return sorted(out)

    def active_version(self, series_id: str) -> int | None:
        return self.read_active(series_id)[0]

    def read_active(self, series_id: str) -> tuple[int | None, str | None]:
        """The active version, and what is wrong with ``ACTIVE`` if anything (None, None: there
        is none, which is normal before a first fit and for staged-only versions)."""
        path = self.series_dir(series_id) / ACTIVE
        if not path.exists():
            return None, None
        try:
            version = int(read_bounded(path, 64).decode("ascii").strip())
        except (BadFile, ValueError) as exc:
            return None, f"{path}: unreadable ({str(exc)[:80]})"
        if version < 1:
            return None, f"{path}: names version {version}"
        return version, None

    def read_meta(self, series_id: str, version: int) -> dict[str, Any]:
        path = self.version_dir(series_id, version) / META
        try:
            meta = load_json(path)
        except BadFile as exc:
            raise ModelLoadError(f"{path}: unreadable metadata ({exc.reason})") from None
        if not isinstance(meta, dict):
            raise ModelLoadError(f"{path}: metadata is not an object")
        fmt = meta.get("format", FORMAT_VERSION)
        if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
            # Written by a newer agent (a downgrade): refuse rather than misread it.
            raise ModelLoadError(f"{path}: model format {fmt!r} is newer than this agent understands ({FORMAT_VERSION})")
        return meta

    def load(self, series_id: str, version: int) -> Model:
        vdir = self.version_dir(series_id, version)
        meta = self.read_meta(series_id, version)
        arrays: dict[str, np.ndarray] = {}
        if (vdir / ARRAYS).exists():
            try:
                arrays = read_npz(vdir / ARRAYS)
            except BadFile as exc:
                reason = exc.reason if exc.reason.startswith("corrupt arrays") else f"corrupt arrays ({exc.reason})"
                raise ModelLoadError(f"{exc.what}: {reason}") from None
        try:
            cls = self.registry(meta["detector"])
            det = cls.from_state(meta["params"], arrays)
        except Exception as exc:
            raise ModelLoadError(f"{vdir}: cannot rebuild detector ({exc!r})") from None
        return Model(detector=det, version=version, meta=meta)

    def load_active(self, series_id: str) -> tuple[Model | None, list[str]]:
        """The active model; if it is corrupt, the newest older version that loads.

        Returns the model (or None) and the errors met on the way, for health reporting.
        """
        errors: list[str] = []
        active, problem = self.read_active(series_id)
        versions = self.versions(series_id)
        if problem is not None:
            errors.append(f"{problem}; serving the newest version that loads")
            candidates = list(reversed(versions))
        elif active is None:
            # No ACTIVE beside local versions: the fit that made them crashed or hit a full disk
            # before activating. Versions pulled from S3 alone are staged, not served.
            candidates = [v for v in reversed(versions) if self._local(series_id, v)][:1]
        else:
            candidates = [v for v in reversed(versions) if v <= active]
        for version in candidates:
            try:
                model = self.load(series_id, version)
            except ModelLoadError as exc:
                errors.append(str(exc))
                continue
            if active is None and problem is None:
                errors.append(self._finish_activation(series_id, version))
            return model, errors
        if active is not None and active not in versions:
            errors.append(f"{self.series_dir(series_id)}: active version {active} is missing")
        return None, errors

    def _finish_activation(self, series_id: str, version: int) -> str:
        """The last step of the fit that made ``version`` (it loads): writing ``ACTIVE``. Left
        undone, every start would report it again and health would stay degraded until the
        series' next fit."""
        what = f"{self.series_dir(series_id)}: no {ACTIVE} file beside version {version}, which a fit made and did not activate"
        try:
            self.activate(series_id, version)
        except (OSError, ModelLoadError) as exc:
            return f"{what}; serving it ({ACTIVE} cannot be written: {exc})"
        return f"{what}; activated it"

    def _local(self, series_id: str, version: int) -> bool:
        try:
            return "imported_from" not in self.read_meta(series_id, version)
        except ModelLoadError:
            return True  # it cannot be served either way; load() will say why

    # ---- writes ------------------------------------------------------------------------
    def _ensure_series_dir(self, series_id: str) -> Path:
        d = self.series_dir(series_id)
        if not (d / SERIES_FILE).is_file():
            # Also when the directory exists: a save that failed (ENOSPC) after mkdir left it
            # without its index, and a store must never hold versions it cannot name.
            self.root.mkdir(parents=True, exist_ok=True)
            d.mkdir(exist_ok=True)
            atomic_write(d / SERIES_FILE, json.dumps({"series": series_id}).encode(), self.fsync)
            if self.fsync:
                _fsync_dir(self.root)
        return d

    def save(
        self,
        series_id: str,
        detector: Detector,
        *,
        n_samples: int,
        stats: dict[str, Any] | None = None,
        source: str = "local",
        activate: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> Model:
        """Write a new immutable version (and by default make it active)."""
        params, arrays = detector.get_state()
        meta = {
            "format": FORMAT_VERSION,
            "series": series_id,
            "detector": detector.name,
            "params": params,
            "threshold": float(detector.threshold),
            "trained_at": time.time(),
            "n_samples": int(n_samples),
            "stats": stats or {},
            "source": source,
            "agent_version": __version__,
        }
        if extra:
            meta.update(extra)
        files = {META: None, ARRAYS: _npz_bytes(arrays) if arrays else None}
        version = self._write_version(series_id, meta, files)
        if activate:
            self.activate(series_id, version)
        return Model(detector=detector, version=version, meta=meta)

    def import_version(self, series_id: str, files: dict[str, bytes], activate: bool) -> int:
        """Store a version received from elsewhere (S3) after the caller verified its checksums.

        The content is validated by loading it before it becomes visible.
        """
        try:
            meta = parse_json(files[META], f"imported {META} of {series_id!r}")
        except (KeyError, BadFile) as exc:
            raise ModelLoadError(f"imported model for {series_id!r} has no valid {META}: {exc}") from None
        if not isinstance(meta, dict):
            raise ModelLoadError(f"imported {META} of {series_id!r} is not an object")
        if len(files.get(ARRAYS, b"")) > MAX_NPZ_FILE_BYTES:
            raise ModelLoadError(f"imported {ARRAYS} of {series_id!r} is larger than {MAX_NPZ_FILE_BYTES} bytes")
        meta["series"] = series_id
        extra = {ARRAYS: files[ARRAYS]} if ARRAYS in files else {}
        version = self._write_version(series_id, meta, {META: None, **extra})
        try:
            self.load(series_id, version)
        except ModelLoadError:
            shutil.rmtree(self.version_dir(series_id, version), ignore_errors=True)
            raise
        if activate:
            self.activate(series_id, version)
        return version

    def _write_version(self, series_id: str, meta: dict[str, Any], files: dict[str, bytes | None]) -> int:
        # Fits run in a worker process while rollbacks and S3 imports run in the agent: the
        # file lock makes version numbers unique across processes, the mutex across threads.
        sdir = self._ensure_series_dir(series_id)
        with self._lock, open(sdir / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._write_version_locked(series_id, meta, files)

    def _write_version_locked(self, series_id: str, meta: dict[str, Any], files: dict[str, bytes | None]) -> int:
        sdir = self._ensure_series_dir(series_id)
        existing = self.versions(series_id)
        version = (existing[-1] if existing else 0) + 1
        meta = {**meta, "version": version}
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=sdir))
        try:
            for name, data in files.items():
                if name == META:
                    data = json.dumps(meta, indent=1, sort_keys=True).encode()
                if data is not None:
                    _write_file(tmp / name, data, self.fsync)
            if self.fsync:
                _fsync_dir(tmp)
            os.rename(tmp, self.version_dir(series_id, version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if self.fsync:
            _fsync_dir(sdir)
        return version

    def activate(self, series_id: str, version: int) -> None:
        if version not in self.versions(series_id):
            raise ModelLoadError(f"series {series_id!r} has no version {version}")
        atomic_write(self.series_dir(series_id) / ACTIVE, f"{version}\n".encode(), self.fsync)

    def rollback(self, series_id: str, to: int | None = None) -> Model:
        """Activate ``to`` (default: the newest version older than the active one) after loading it."""
        active = self.active_version(series_id)
        versions = self.versions(series_id)
        if to is None:
            if active is None:
                raise ModelLoadError(f"series {series_id!r} has no model to roll back" if not versions else
                                     f"series {series_id!r} has no active model; name a version ({versions})")
            older = [v for v in versions if v < active]
            if not older:
                raise ModelLoadError(f"series {series_id!r} has no version before {active}")
            to = older[-1]
        model = self.load(series_id, to)
        self.activate(series_id, to)
        return model

    def cleanup_temp(self) -> int:
        """Remove half-written version directories left by a crash; returns how many."""
        try:
            return self._cleanup_temp()
        except OSError:
            return 0  # a read-only or vanished store: nothing to clean, loading says the rest

    def _cleanup_temp(self) -> int:
        removed = 0
        if not self.root.is_dir():
            return 0
        for sdir in self.root.iterdir():
            if not sdir.is_dir():
                continue
            for child in sdir.iterdir():
                if child.name.startswith(".tmp-") or child.name.endswith(".tmp"):
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
                    removed += 1
        return removed
