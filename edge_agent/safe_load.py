"""Reading model files as if an attacker wrote them: sizes and depths bounded before parsing.

Model files come from the local store (a disk that filled up, a crash, a hand edit) and from
S3 pulls (anyone with write access to the bucket). Before these checks a deeply nested
``meta.json`` raised an uncaught RecursionError at start (the agent exited 1 on every start
and systemd gave up), and a 1.9 MB ``arrays.npz`` that decompresses to gigabytes took the
agent's RSS to 1.9 GB. Written by hand rather than with ``np.load``: numpy reads a member's
header and allocates what it declares, with no bound, and its zip reader has none either.

Every failure is a ``BadFile`` with a message naming the file; callers turn it into a model
that is reported and skipped, never into an exception that stops the agent.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

# A model's meta.json is a few kB; 1 MiB leaves room for any detector's parameters.
MAX_JSON_BYTES = 1024 * 1024
# Nesting of a model's JSON: meta -> params/stats -> a few levels. 32 is generous.
MAX_JSON_DEPTH = 32
# arrays.npz on disk, and what its members may add up to once read. An Isolation Forest of 100
# trees is ~1.6 MB; of 2,000 trees ~32 MB.
MAX_NPZ_FILE_BYTES = 64 * 1024 * 1024
MAX_ARRAYS_BYTES = 64 * 1024 * 1024
MAX_ARRAYS = 64
# Plain numbers only: bool, signed and unsigned ints, floats (never objects, never pickles).
_KINDS = set("biuf")


class BadFile(ValueError):
    """A file that cannot be used: ``str()`` is "<what>: <reason>"."""

    def __init__(self, what: object, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = str(what)
        self.reason = reason


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refusing it before reading if it is larger than ``max_bytes``."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise BadFile(path, f"{size} bytes, more than the {max_bytes} allowed")
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise BadFile(path, f"cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # grew while we read it
        raise BadFile(path, f"more than the {max_bytes} bytes allowed")
    return data


def depth(doc: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in node)
    return deepest


def parse_json(data: bytes, what: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    if len(data) > max_bytes:
        raise BadFile(what, f"{len(data)} bytes, more than the {max_bytes} allowed")
    try:
        doc = json.loads(data)
    except RecursionError:
        raise BadFile(what, "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadFile(what, f"not JSON ({str(exc)[:80]})") from None
    if depth(doc) > max_depth:
        raise BadFile(what, f"JSON nested deeper than {max_depth}")
    return doc


def load_json(path: Path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    return parse_json(read_bounded(path, max_bytes), str(path), max_bytes, max_depth)


def load_npz(path: Path, max_file_bytes: int = MAX_NPZ_FILE_BYTES, max_total: int = MAX_ARRAYS_BYTES) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``, every size checked before anything is allocated: the file's,
    each member's declared uncompressed size, and the dtype and shape in its ``.npy`` header,
    which must account for the member exactly."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadFile(path, f"cannot read ({exc.strerror or exc})") from None
    if size > max_file_bytes:
        raise BadFile(path, f"{size} bytes, more than the {max_file_bytes} allowed")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ARRAYS:
                raise BadFile(path, f"{len(infos)} members, more than {MAX_ARRAYS}")
            total = sum(i.file_size for i in infos)
            if total > max_total:
                raise BadFile(path, f"members declare {total} bytes uncompressed, more than the {max_total} allowed")
            return {_member_name(path, i): _read_member(path, zf, i) for i in infos}
    except BadFile:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as exc:
        # zipfile and zlib raise many types for a corrupt or hostile archive; all mean the same.
        raise BadFile(path, f"corrupt arrays ({type(exc).__name__}: {str(exc)[:80]})") from None


def _member_name(path: Path, info: zipfile.ZipInfo) -> str:
    name = info.filename
    if not name.endswith(".npy") or "/" in name or info.is_dir():
        raise BadFile(path, f"unexpected member {name[:60]!r}")
    return name[:-4]


def _read_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise BadFile(f"{path}:{info.filename}", f"unknown .npy version {version}")
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(fh, max_header_size=10_000)
        if dtype.hasobject or dtype.kind not in _KINDS:
            raise BadFile(f"{path}:{info.filename}", f"dtype {dtype} is not a plain number")
        count = 1
        for n in shape:
            count *= int(n)
        nbytes = count * dtype.itemsize
        if fh.tell() + nbytes != info.file_size:
            raise BadFile(f"{path}:{info.filename}", f"header declares {nbytes} bytes of data, the member holds {info.file_size - fh.tell()}")
        buf = bytearray(nbytes)
        view, got = memoryview(buf), 0
        while got < nbytes:
            n = fh.readinto(view[got:])
            if not n:
                raise BadFile(f"{path}:{info.filename}", "truncated")
            got += n
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")
