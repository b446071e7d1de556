"""machines/checkpoint.py: a machine's live state kept across a restart, and every way its
file can be wrong costing that state only."""

from __future__ import annotations

from pathlib import Path

from test_machine_operations import pump_set

from edge_agent.config import AgentConfig
from edge_agent.machines import MachineSet, checkpoint
from edge_agent.pipeline import InlineTrainer


def restarted(tmp_path: Path, store) -> MachineSet:  # noqa: ANN001
    ms = MachineSet(AgentConfig.model_validate({"gateway_id": "gw-t"}), InlineTrainer(), lambda e: None, store=store)
    model, errors = store.load_active("l1/p1")
    assert errors == [] and model is not None
    ms.adopt("l1/p1", model)
    return ms


def test_round_trip_then_the_file_is_gone(tmp_path: Path) -> None:
    ms, store, _ = pump_set(tmp_path)
    path = tmp_path / checkpoint.FILE
    assert checkpoint.write(path, checkpoint.snapshot(ms), fsync=False) == 1
    before = ms.machines["l1/p1"].model.detector.live_state()
    fresh = restarted(tmp_path, store)
    assert fresh.machines["l1/p1"].model.detector.live_state() != before  # the fit-end state
    machines, errors = checkpoint.take(path)
    assert errors == [] and not path.exists()
    assert checkpoint.restore(fresh, machines) == (1, [])
    assert fresh.machines["l1/p1"].model.detector.live_state() == before
    assert fresh.machines["l1/p1"].last_row_ts == ms.machines["l1/p1"].last_row_ts


def test_a_changed_model_or_a_bad_entry_keeps_the_stored_state(tmp_path: Path) -> None:
    ms, store, _ = pump_set(tmp_path)
    doc = checkpoint.snapshot(ms)
    fresh = restarted(tmp_path, store)
    fit_end = fresh.machines["l1/p1"].model.detector.live_state()
    entry = doc["machines"]["l1/p1"]
    assert checkpoint.restore(fresh, {"l1/p1": {**entry, "version": 2}}) == (0, [])  # another model since
    n, errors = checkpoint.restore(fresh, {"l1/p1": {**entry, "state": {**entry["state"], "m": entry["state"]["m"][:-1]}}})
    assert n == 0 and "'m' must hold" in errors[0]
    n, errors = checkpoint.restore(fresh, {"l1/p1": {**entry, "state": {**entry["state"], "pv": [-1.0] * len(entry["state"]["pv"])}}})
    assert n == 0 and ">= 0" in errors[0]
    assert fresh.machines["l1/p1"].model.detector.live_state() == fit_end


def test_with_periodic_writes_the_file_stays(tmp_path: Path) -> None:
    """machines.live_state_every_s > 0: the file is the newest known state, read at every start
    until the next write replaces it (a crash soon after a start must still find it)."""
    ms, store, _ = pump_set(tmp_path)
    path = tmp_path / checkpoint.FILE
    checkpoint.write(path, checkpoint.snapshot(ms), fsync=False)
    for _ in range(2):
        machines, errors = checkpoint.take(path, remove=False)
        assert errors == [] and path.exists()
        assert checkpoint.restore(restarted(tmp_path, store), machines) == (1, [])


def test_a_bad_file_is_reported_and_removed(tmp_path: Path) -> None:
    path = tmp_path / checkpoint.FILE
    assert checkpoint.take(path) == ({}, [])
    for remove in (True, False):  # reported once, not at every start
        for junk in (b"{", b"[1, 2]", b'{"format": 9, "machines": {}}', b"[" * 100 + b"]" * 100):
            path.write_bytes(junk)
            machines, errors = checkpoint.take(path, remove=remove)
            assert machines == {} and "machine live state not restored" in errors[0] and not path.exists()
