"""The series' live-state file (series_live.py on live_state_file.py): a round trip restores
each streaming detector exactly; a bad, oversized or deep file, or a bad entry, is refused
with a message; an entry of another model version, or of a detector that does not stream,
is not used."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent import live_state_file, series_live
from edge_agent.config import AgentConfig
from edge_agent.model_store import Model
from edge_agent.pipeline import InlineTrainer, Pipeline


def trended(detector: str = "robust", n: int = 3000, series: tuple[str, ...] = ("a/t",)) -> Pipeline:
    """A pipeline whose series were fitted on 500 readings and then scored 2,500 more of a trend."""
    fit_end: dict[str, Model] = {}

    def fitted(s: Any, m: Model, req: Any) -> None:  # what the model store holds for it
        fit_end[s.id] = Model(type(m.detector).from_state(*m.detector.get_state()), m.version, m.meta)

    pipe = Pipeline(AgentConfig.model_validate({"detector": {"name": detector, "min_train_samples": 500}}), InlineTrainer(),
                    lambda ev: None, on_model=fitted)
    pipe.fit_end = fit_end  # type: ignore[attr-defined]
    rng = np.random.default_rng(3)
    for sid in series:
        for i in range(n):
            pipe.process(sid, 50.0 + 0.002 * i + float(rng.normal(0, 1)), 1.7e9 + 60.0 * i)
        assert pipe.series[sid].model is not None
    return pipe


def fresh_like(pipe: Pipeline) -> Pipeline:
    """A restarted agent's pipeline: the same models, each detector back at its fit-end state."""
    out = Pipeline(pipe.cfg, InlineTrainer(), lambda ev: None)
    for sid, m in pipe.fit_end.items():  # type: ignore[attr-defined]
        out.adopt(sid, Model(type(m.detector).from_state(*m.detector.get_state()), m.version, m.meta))
    return out


def states_equal(a: Any, b: Any) -> bool:
    (pa, aa), (pb, ab) = a.get_state(), b.get_state()
    return pa == pb and aa.keys() == ab.keys() and all(np.array_equal(aa[k], ab[k]) for k in aa)


@pytest.mark.parametrize("detector", ["robust", "adaptive"])
def test_round_trip_restores_each_streaming_detector(tmp_path: Path, detector: str) -> None:
    pipe = trended(detector, series=("a/t", "b/t"))
    path = tmp_path / series_live.FILE
    entries = series_live.take(list(pipe.series.values()))
    assert series_live.write(path, entries, fsync=False) == 2
    restarted = fresh_like(pipe)
    assert not states_equal(restarted.series["a/t"].model.detector, pipe.series["a/t"].model.detector)
    expected = series_live.versions(restarted)
    restored, errors, other, _ = series_live.read(path, expected)
    assert errors == [] and other == 0 and set(restored) == {"a/t", "b/t"}
    assert series_live.restore(restarted, restored, expected) == 2
    for sid in ("a/t", "b/t"):
        assert states_equal(restarted.series[sid].model.detector, pipe.series[sid].model.detector)


def test_the_snapshot_copies_the_arrays(tmp_path: Path) -> None:
    pipe = trended()
    [(_, _, _, _, arrays)] = series_live.take(list(pipe.series.values()))
    before = {k: v.copy() for k, v in arrays.items()}
    pipe.process("a/t", 60.0, 1.7e9 + 60.0 * 3000)  # the detector learns after the snapshot
    assert all(np.array_equal(before[k], arrays[k]) for k in arrays)


def test_sliced_snapshot_takes_every_series() -> None:
    pipe = trended(n=600, series=tuple(f"s{i}" for i in range(7)))
    entries = asyncio.run(series_live.snapshot(pipe, slice_size=3))
    assert sorted(e[0] for e in entries) == [f"s{i}" for i in range(7)]


def test_non_streaming_detectors_are_not_written(tmp_path: Path) -> None:
    pipe = trended("statistical", n=600)
    assert series_live.take(list(pipe.series.values())) == []
    assert series_live.versions(pipe) == {}


def test_another_model_version_is_skipped(tmp_path: Path) -> None:
    pipe = trended()
    path = tmp_path / series_live.FILE
    series_live.write(path, series_live.take(list(pipe.series.values())), fsync=False)
    restarted = fresh_like(pipe)
    v = restarted.series["a/t"].model.version
    restored, errors, other, _ = series_live.read(path, {"a/t": (v + 1, "robust")})
    assert restored == {} and errors == [] and other == 1
    restored, errors, other, _ = series_live.read(path, {"a/t": (v, "adaptive")})  # another detector: another model
    assert restored == {} and other == 1
    # Read for v, but the series got another model before it was put back: not used.
    fit_end = restarted.series["a/t"].model.detector.get_state()
    restored, _, _, _ = series_live.read(path, {"a/t": (v, "robust")})
    assert series_live.restore(restarted, restored, {"a/t": (v + 1, "robust")}) == 0
    assert restarted.series["a/t"].model.detector.get_state()[0] == fit_end[0]


def rewrite(path: Path, edit: Any) -> None:
    """Rewrite the file's JSON document through ``edit(doc)``, arrays unchanged."""
    doc, members = live_state_file.read_npz(path, kind=series_live.KIND, fmt=series_live.FORMAT, key="series",
                                            max_bytes=series_live.MAX_BYTES, max_depth=series_live.MAX_DEPTH)
    edit(doc)
    live_state_file.write_npz(path, json.dumps(doc).encode(), members, fsync=False)


def test_a_bad_entry_costs_that_series_only(tmp_path: Path) -> None:
    pipe = trended(series=("a/t", "b/t"))
    path = tmp_path / series_live.FILE
    series_live.write(path, series_live.take(list(pipe.series.values())), fsync=False)
    expected = series_live.versions(fresh_like(pipe))

    def break_a(doc: dict[str, Any]) -> None:
        doc["series"]["a/t"]["params"]["cal_q"] = [1.0]

    rewrite(path, break_a)
    restored, errors, _, _ = series_live.read(path, expected)
    assert set(restored) == {"b/t"} and len(errors) == 1 and "'a/t'" in errors[0] and "cal_q" in errors[0]

    def point_outside(doc: dict[str, Any]) -> None:
        doc["series"]["b/t"]["arrays"]["profile"][1] = 10**9

    rewrite(path, point_outside)
    restored, errors, _, _ = series_live.read(path, expected)
    assert restored == {} and any("outside the file's arrays" in e for e in errors)

    def nan(doc: dict[str, Any]) -> None:  # Python's JSON reads NaN; adaptive's from_state would take it
        doc["series"]["b/t"]["params"]["threshold"] = float("nan")

    rewrite(path, nan)
    restored, errors, _, _ = series_live.read(path, expected)
    assert restored == {} and any("'threshold': not finite" in e for e in errors)


def test_a_bad_file_is_refused_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / series_live.FILE
    assert series_live.read(path, {}) == ({}, [], 0, [])  # none yet: nothing to say
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros(3))
    deep = np.frombuffer(b"[" * 50 + b"]" * 50, dtype=np.uint8)
    wrong = np.frombuffer(json.dumps({"kind": "machine checkpoint", "format": 1, "series": {}}).encode(), dtype=np.uint8)
    objects = io.BytesIO()
    np.savez(objects, doc=np.array([{"a": 1}], dtype=object))  # a hostile file: object arrays need pickle to read
    cases = {
        b"not a zip": "corrupt arrays",
        buf.getvalue(): "no 'doc' member",
        objects.getvalue(): "is not a plain number",
    }
    for data, why in cases.items():
        path.write_bytes(data)
        restored, errors, _, _ = series_live.read(path, {})
        assert restored == {} and len(errors) == 1 and "series live state not restored" in errors[0] and why in errors[0], errors
    for doc, why in ((deep, "nested deeper"), (wrong, "not a format 1 series live state file")):
        live_state_file.write_npz(path, doc.tobytes(), {}, fsync=False)
        restored, errors, _, _ = series_live.read(path, {})
        assert restored == {} and why in errors[0], errors
    with open(path, "wb") as f:  # oversized: refused before it is read
        f.truncate(series_live.MAX_BYTES + 1)
    restored, errors, _, _ = series_live.read(path, {})
    assert restored == {} and "more than the" in errors[0]


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / series_live.FILE
    path.write_bytes(b"the previous file")

    def fail(f: Any) -> None:
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        live_state_file.write_atomic(path, fail)
    assert path.read_bytes() == b"the previous file" and list(tmp_path.iterdir()) == [path]


def test_a_failed_write_is_kept_for_health_until_a_write_succeeds(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pipe = trended()

    async def saves() -> tuple[int, str | None, int, str | None]:
        with ThreadPoolExecutor(1) as ex:
            keeper = series_live.Keeper(pipe, tmp_path / "gone" / series_live.FILE, 0.0, asyncio.get_running_loop(), ex)
            n_bad = await keeper.save("periodic")
            err = keeper.last_error
            (tmp_path / "gone").mkdir()
            n_ok = await keeper.save("periodic")
            return n_bad, err, n_ok, keeper.last_error

    n_bad, err, n_ok, err_after = asyncio.run(saves())
    assert n_bad == 0 and err is not None and "gone" in err
    assert n_ok == 1 and err_after is None and (tmp_path / "gone" / series_live.FILE).exists()
