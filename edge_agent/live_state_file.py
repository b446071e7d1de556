"""The file a live state is kept in across restarts: written atomically, read as untrusted.

Shared by the machines' checkpoint (``machines/checkpoint.py``: plain JSON, so a person can
read it) and the series' live state (``series_live.py``: a JSON document plus the detectors'
arrays, in one ``.npz``). Both are written the same way, off the event loop:

- **atomic**: a temporary file beside it, written, fsynced, renamed over the old one, and
  the directory fsynced, so a crash or power loss at any moment leaves either the old file or
  the new one, never a torn one;
- **read as untrusted** (``safe_load``): the file's size, the JSON's size and depth, each
  array's declared size and dtype are bounded before anything is parsed or allocated, no
  pickle is ever read, and the document must say its kind and format. Every failure is a
  ``BadFile`` naming the file and what is wrong; callers turn it into a live state not
  restored (logged), never into a failed start.

Series ids and machine ids are keys inside these files, never parts of a path.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from edge_agent.safe_load import BadFile, load_json, load_npz, parse_json

DOC = "doc"  # the .npz member holding the JSON document, as uint8 bytes


def write_atomic(path: Path, write: Callable[[IO[bytes]], None], fsync: bool = True) -> None:
    """Write ``path`` through ``write(fileobj)``: tmp, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if fsync:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: Path, doc: dict[str, Any], fsync: bool = True) -> None:
    """``doc`` as compact JSON (``ValueError`` on a non-finite number: callers filter first)."""
    data = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    write_atomic(path, lambda f: f.write(data), fsync)


def write_npz(path: Path, doc_json: bytes, arrays: dict[str, np.ndarray], fsync: bool = True) -> None:
    """A JSON document (already encoded) and plain-number arrays in one uncompressed ``.npz``."""
    members = {DOC: np.frombuffer(doc_json, dtype=np.uint8), **arrays}
    for name, a in members.items():
        if a.dtype.hasobject or a.dtype.kind not in "biuf":
            raise ValueError(f"array {name!r}: dtype {a.dtype} is not a plain number")
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **members)
    write_atomic(path, lambda f: f.write(buf.getbuffer()), fsync)


def _checked(doc: Any, what: str, kind: str, fmt: int, key: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("kind", kind) != kind or doc.get("format") != fmt or not isinstance(doc.get(key), dict):
        raise BadFile(what, f"not a format {fmt} {kind} file")
    return doc


def read_json(path: Path, *, kind: str, fmt: int, key: str, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """The document of a ``write_json`` file, checked: its kind, its format, ``key`` a mapping."""
    return _checked(load_json(path, max_bytes=max_bytes, max_depth=max_depth), str(path), kind, fmt, key)


def read_npz(path: Path, *, kind: str, fmt: int, key: str, max_bytes: int, max_depth: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The document and the arrays of a ``write_npz`` file, every size bounded before it is read."""
    members = load_npz(path, max_file_bytes=max_bytes, max_total=max_bytes)
    raw = members.pop(DOC, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise BadFile(path, f"no {DOC!r} member")
    doc = parse_json(raw.tobytes(), f"{path}:{DOC}", max_bytes=max_bytes, max_depth=max_depth)
    return _checked(doc, str(path), kind, fmt, key), members
