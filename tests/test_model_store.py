from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.detectors.statistical import StatisticalDetector
from edge_agent.model_store import ModelLoadError, ModelStore, safe_name

HOSTILE_IDS = [
    "../x", "../../etc/passwd", "/etc/passwd", "a/../../b", "..", ".", "", "a\x00b", "\x00",
    "é/ünïcødé/传感器", "x" * 70_000, "%2e%2e/%2fetc", "con", "a\\..\\b", "~root", "-rf", " ", "\n",
]


def fitted(mean: float = 10.0) -> StatisticalDetector:
    d = StatisticalDetector(k=3)
    d.fit(np.array([mean - 1, mean, mean + 1]))
    return d


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("sid", HOSTILE_IDS)
def test_hostile_series_ids_never_leave_the_store(tmp_path: Path, sid: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    store = ModelStore(tmp_path / "state" / "models")
    before = tree(tmp_path)
    store.save(sid, fitted(), n_samples=3)
    new = tree(tmp_path) - before
    assert new and all(p == "state" or p.startswith("state/models") for p in new), new
    assert tree(outside) == {"keep"}
    name = safe_name(sid)
    assert "/" not in name and "\x00" not in name and name not in (".", "..") and len(name) <= 120
    assert store.list_series() == [sid]
    assert store.load(sid, 1).detector.mean == 10.0


def test_safe_names_are_distinct() -> None:
    ids = ["a/b", "a%2Fb", "a_b", "a-b", "a.b", "A/b", "x" * 300, "x" * 301]
    assert len({safe_name(i) for i in ids}) == len(ids)


def test_versions_are_immutable_and_rollback_works(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    m1 = store.save("m1/temp", fitted(10), n_samples=3)
    m2 = store.save("m1/temp", fitted(20), n_samples=3)
    assert (m1.version, m2.version) == (1, 2)
    assert store.active_version("m1/temp") == 2
    meta = store.read_meta("m1/temp", 2)
    for key in ("version", "detector", "params", "trained_at", "n_samples", "stats", "agent_version"):
        assert key in meta
    back = store.rollback("m1/temp")
    assert back.version == 1 and store.active_version("m1/temp") == 1
    assert store.load("m1/temp", 2).detector.mean == 20.0  # v2 still there, untouched
    with pytest.raises(ModelLoadError):
        store.rollback("m1/temp")  # nothing before v1


def test_corrupt_active_version_falls_back_to_previous(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save("s", fitted(10), n_samples=3)
    store.save("s", fitted(20), n_samples=3)
    (store.version_dir("s", 2) / "meta.json").write_text("{garbage")
    model, errors = store.load_active("s")
    assert model is not None and model.version == 1
    assert errors and "v000002" in errors[0]


def test_npz_is_never_unpickled(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save("s", fitted(), n_samples=3)
    vdir = store.version_dir("s", 1)
    # An object array can only be stored with pickle; loading must refuse it.
    np.savez(vdir / "arrays.npz", evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelLoadError):
        store.load("s", 1)


CRASHER = r"""
import os, sys
import numpy as np
from edge_agent.detectors.statistical import StatisticalDetector
from edge_agent.model_store import ModelStore
store = ModelStore(sys.argv[1])
d = StatisticalDetector(); d.fit(np.array([1.0, 2.0, 3.0]))
store.save("m/s", d, n_samples=3)
real_rename = os.rename
def crash(src, dst):
    if "v000002" in str(dst):
        os._exit(9)   # power cut: files written and fsynced, rename never happens
    return real_rename(src, dst)
os.rename = crash
d2 = StatisticalDetector(); d2.fit(np.array([100.0, 200.0, 300.0]))
store.save("m/s", d2, n_samples=3)
"""


def test_crash_between_write_and_rename_keeps_previous_version(tmp_path: Path) -> None:
    root = tmp_path / "models"
    res = subprocess.run([sys.executable, "-c", CRASHER, str(root)], capture_output=True, text=True)
    assert res.returncode == 9, res.stderr
    store = ModelStore(root)
    assert store.versions("m/s") == [1]
    model, errors = store.load_active("m/s")
    assert model is not None and model.version == 1 and not errors
    leftovers = [p for p in store.series_dir("m/s").iterdir() if p.name.startswith(".tmp-")]
    assert leftovers  # the half-written version is there, invisible...
    assert store.cleanup_temp() == len(leftovers)  # ...and cleaned up at start
    assert store.save("m/s", fitted(), n_samples=3).version == 2


def test_models_cli_offline(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    store.save("m1/temp", fitted(10), n_samples=3)
    store.save("m1/temp", fitted(20), n_samples=3)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge_agent", "models", *args, "--state-dir", str(tmp_path)], capture_output=True, text=True)

    listed = json.loads(cli("list", "--json").stdout)
    assert listed == [{"series": "m1/temp", "active": 2, "versions": [1, 2], "detector": "statistical", "status": "ok", "problems": []}]
    shown = json.loads(cli("show", "m1/temp").stdout)
    assert shown["version"] == 2 and shown["active"] is True
    res = cli("rollback", "m1/temp")
    assert res.returncode == 0, res.stderr
    assert store.active_version("m1/temp") == 1
    assert cli("show", "nope").returncode == 1
    os.sync()


def test_newer_model_format_is_refused_and_previous_serves(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save("s", fitted(10), n_samples=3)
    store.save("s", fitted(20), n_samples=3)
    meta_path = store.version_dir("s", 2) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format"] = 99
    meta_path.write_text(json.dumps(meta))
    model, errors = store.load_active("s")
    assert model is not None and model.version == 1
    assert "newer" in errors[0]
