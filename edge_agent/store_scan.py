"""A look over the model store: which directories are series, and what is wrong with the rest.

A series directory is named by ``series.json``. One whose index is missing (a fit that met
ENOSPC after the directory was made, before the store wrote the index whenever it is missing)
or corrupt is recovered from its versions' ``meta.json``, which name the series, provided the
name maps back to the directory. The agent rewrites a recovered index at start (``repair``);
``edge-agent models list`` only reports. Anything else is reported, never raised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.model_store import (
    META,
    SERIES_FILE,
    VERSION_DIR,
    ModelStore,
    atomic_write,
    listdir_or_empty,
    safe_name,
)
from edge_agent.safe_load import BadFile, load_json


@dataclass
class ScanResult:
    """What a look over the store found: series ids, and problems to report."""

    series: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


def scan(store: ModelStore, repair: bool = False) -> ScanResult:
    """Every series directory: its id from ``series.json``, or from its versions when that
    is missing or corrupt (rewritten when ``repair``), or a problem saying why not."""
    out = ScanResult()
    try:
        children = sorted(store.root.iterdir()) if store.root.is_dir() else []
    except OSError as exc:
        out.problems.append(f"{store.root}: cannot list ({exc.strerror or exc})")
        return out
    for child in children:
        if child.name.startswith(".") or not child.is_dir():
            continue
        try:
            sid = load_json(child / SERIES_FILE, max_bytes=64 * 1024)["series"]
            if not isinstance(sid, str) or safe_name(sid) != child.name:
                raise BadFile(child / SERIES_FILE, f"names a series that does not belong in {child.name}")
            out.series.append(sid)
            continue
        except (BadFile, KeyError, TypeError) as exc:
            index_problem = str(exc) if (child / SERIES_FILE).exists() else f"{child / SERIES_FILE} is missing"
        sid = _series_from_versions(child)
        if sid is None:
            if any(VERSION_DIR.match(c.name) for c in listdir_or_empty(child)):
                out.problems.append(f"{index_problem}, and no version names the series: not loaded")
            continue  # an empty directory: a fit that failed before its first version
        out.series.append(sid)
        out.recovered.append(sid)
        note = f"{index_problem}; the series {sid!r} was recovered from its versions"
        if repair:
            try:
                atomic_write(child / SERIES_FILE, json.dumps({"series": sid}).encode(), store.fsync)
                note += " and its index rewritten"
            except OSError as exc:
                note += f" (the index could not be rewritten: {exc.strerror or exc})"
        out.problems.append(note)
    return out


def _series_from_versions(sdir: Path) -> str | None:
    names = sorted((c.name for c in listdir_or_empty(sdir) if VERSION_DIR.match(c.name)), reverse=True)
    for name in names:
        try:
            sid = load_json(sdir / name / META).get("series")
        except (BadFile, AttributeError):
            continue
        if isinstance(sid, str) and safe_name(sid) == sdir.name:
            return sid
    return None
