"""Model files as an attacker (or a full disk) leaves them (issue 15, findings 8 and 9): loading
is bounded, a bad file is reported and never raises, and a store written through ENOSPC stays
loadable. ENOSPC is real: the store lives on a tiny tmpfs (skipped where mounting is refused)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from faults import deep_json, npy_header, npz_bomb

from edge_agent.detectors.statistical import StatisticalDetector
from edge_agent.model_store import ModelStore, safe_name
from edge_agent.safe_load import MAX_ARRAYS_BYTES, BadFile, load_json, load_npz


def fitted(center: float = 10.0) -> StatisticalDetector:
    d = StatisticalDetector()
    d.fit(np.array([center - 1, center, center + 1]))
    return d


def test_a_deeply_nested_meta_is_reported_not_raised(tmp_path: Path) -> None:
    # Issue 15: an uncaught RecursionError at start; the agent exited 1 on every start.
    store = ModelStore(tmp_path)
    store.save("s", fitted(1), n_samples=3)
    store.save("s", fitted(2), n_samples=3)
    (store.version_dir("s", 2) / "meta.json").write_bytes(deep_json(100_000))
    model, errors = store.load_active("s")
    assert model is not None and model.version == 1
    assert "nested too deeply" in errors[0]
    (store.version_dir("s", 1) / "meta.json").write_bytes(deep_json(40))  # parses, but deeper than any meta
    model, errors = store.load_active("s")
    assert model is None and "nested deeper than 32" in errors[1]
    (store.series_dir("s") / "series.json").write_bytes(deep_json(100_000))
    scan = store.scan()
    assert scan.series == [] and "no version names the series" in scan.problems[0]


def test_size_bounds_come_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "meta.json"
    big.write_bytes(b"[" + b"0," * 600_000 + b"0]")
    with pytest.raises(BadFile, match="more than the 1048576 allowed"):
        load_json(big)


def test_an_npz_bomb_is_refused_before_it_inflates(tmp_path: Path) -> None:
    # Issue 15: a 1.9 MB arrays.npz took RSS to 1.9 GB at start.
    path = tmp_path / "arrays.npz"
    path.write_bytes(npz_bomb(gib=1.0))
    assert path.stat().st_size < 2 * 1024 * 1024
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BadFile, match="members declare .* bytes uncompressed"):
        load_npz(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50_000  # kB


def test_an_npz_whose_header_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.npy", npy_header((10**9,)) + bytes(80))  # 8 GB declared in 80 bytes
        zf.writestr("b.npy", npy_header((4,), "|O") + bytes(32))
    with pytest.raises(BadFile, match="header declares 8000000000 bytes"):
        load_npz(path)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("b.npy", npy_header((4,), "|O") + bytes(32))
    with pytest.raises(BadFile, match="not a plain number"):
        load_npz(path)
    assert MAX_ARRAYS_BYTES <= 64 * 1024 * 1024


def test_garbage_or_missing_active_is_reported_and_a_version_serves(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save("s", fitted(1), n_samples=3)
    store.save("s", fitted(2), n_samples=3)
    (store.series_dir("s") / "ACTIVE").write_bytes(b"\xffgarbage")
    model, errors = store.load_active("s")
    assert model is not None and model.version == 2 and "ACTIVE: unreadable" in errors[0]
    (store.series_dir("s") / "ACTIVE").unlink()  # a crash between a version and its activation
    model, errors = store.load_active("s")
    assert model is not None and model.version == 2 and "no ACTIVE file beside version 2" in errors[0]
    assert errors[0].endswith("activated it") and store.active_version("s") == 2  # the fit's last step, done
    assert store.load_active("s")[1] == []  # reported once: the next start finds a whole store


def test_a_series_directory_without_its_index_is_recovered_from_its_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save("m1/temp", fitted(), n_samples=3)
    (store.series_dir("m1/temp") / "series.json").unlink()
    before = store.scan()
    assert before.series == ["m1/temp"] and before.recovered == ["m1/temp"] and "is missing" in before.problems[0]
    assert not (store.series_dir("m1/temp") / "series.json").exists()  # scan() alone changes nothing
    store.scan(repair=True)
    assert json.loads((store.series_dir("m1/temp") / "series.json").read_text()) == {"series": "m1/temp"}
    assert store.scan().problems == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while fh.write(bytes(4096)):
                pass
        except OSError:
            pass
    return filler


def test_a_save_through_a_full_disk_leaves_a_store_that_loads_after_a_restart(tiny_disk: Path) -> None:
    # Issue 15, finding 8: a fit that failed with ENOSPC left the series directory without
    # series.json; the next versions went there, and after a restart the series was skipped.
    root = tiny_disk / "models"
    root.mkdir()
    filler = fill(tiny_disk)
    with pytest.raises(OSError):
        ModelStore(root).save("m1/temp", fitted(1), n_samples=3)
    assert (root / safe_name("m1/temp")).is_dir()  # what the failed save left behind
    filler.unlink()
    ModelStore(root).save("m1/temp", fitted(2), n_samples=3)
    restarted = ModelStore(root)  # a new process would see this
    scan = restarted.scan()
    assert scan.series == ["m1/temp"] and scan.problems == []
    model, errors = restarted.load_active("m1/temp")
    assert model is not None and not errors


def test_a_failure_at_every_write_of_a_save_leaves_a_loadable_store(tiny_disk: Path) -> None:
    """ENOSPC at each successive write of a save (by leaving a little less room each time):
    the store always lists and loads what it held before, and the next save works."""
    root = tiny_disk / "models"
    root.mkdir()
    store = ModelStore(root)
    store.save("s", fitted(1), n_samples=3)
    for room in range(0, 16384, 512):
        filler = fill(tiny_disk)
        os.truncate(filler, max(0, filler.stat().st_size - room))
        try:
            store.save("s", fitted(2), n_samples=3)
        except OSError:
            pass
        scan = ModelStore(root).scan()
        assert scan.series == ["s"], (room, scan)
        model, _ = ModelStore(root).load_active("s")
        assert model is not None, room
        filler.unlink()
    ModelStore(root).cleanup_temp()
    assert store.save("s", fitted(3), n_samples=3).version > 1


def test_models_list_reports_what_is_wrong(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    store.save("good/temp", fitted(), n_samples=3)
    store.save("bad/temp", fitted(), n_samples=3)
    (store.version_dir("bad/temp", 1) / "meta.json").write_bytes(deep_json(100_000))
    res = subprocess.run([sys.executable, "-m", "edge_agent", "models", "list", "--json", "--state-dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 1
    rows = {r["series"]: r for r in json.loads(res.stdout)}
    assert rows["good/temp"]["status"] == "ok" and rows["bad/temp"]["status"] == "problem"
    assert "nested too deeply" in rows["bad/temp"]["problems"][0]
