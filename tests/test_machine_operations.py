"""machines/operations.py: what commands and HTTP will do with a machine, on a real MachineSet,
a real machine store and the simulated pump's relation break."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig
from edge_agent.machines import MachineSet
from edge_agent.machines import operations as ops
from edge_agent.model_store import ModelLoadError, ModelStore
from edge_agent.pipeline import InlineTrainer
from edge_agent.pump_sim import SENSORS, Pump

T0 = 1.7e9


def pump_set(tmp_path: Path, until: int = 1230) -> tuple[MachineSet, ModelStore, list]:
    cfg = AgentConfig.model_validate({"gateway_id": "gw-t"})
    store = ModelStore.for_machines(tmp_path / "machine_models", fsync=False)
    events: list = []
    ms = MachineSet(cfg, InlineTrainer(), events.append, store=store)
    rng = random.Random(4)
    pump = Pump.random("p1", rng)
    for t in range(until):
        values, _ = pump.step(float(t), 1.0, rng, 1.0 if t == 1200 else 0.0, t == 1200)
        ms.feed_row("l1/p1", [(s, values[s]) for s in SENSORS], T0 + t)
    return ms, store, events


def test_status_list_and_plot_data_of_a_machine_in_alarm(tmp_path: Path) -> None:
    ms, _, events = pump_set(tmp_path)
    assert [e.state for e in events] == ["raised"]
    (row,) = ops.list_machines(ms)
    assert row["machine"] == "l1/p1" and row["state"] == "alarm" and row["sensors"] == 5
    assert row["model"]["version"] == 1 and row["alarm"]["seq"] == 1
    assert row["top_sensors"][:2] == ["current high", "flow low"]
    st = ops.machine_status(ms, "l1/p1")
    assert st["alarm"]["alert_id"] == events[0].alert_id and st["contributions"][0]["sensor"] in ("current", "flow")
    plot = ops.machine_plot_data(ms, "l1/p1", 100)
    assert len(plot["ts"]) == 100 and plot["ts"][-1] == T0 + 1229
    assert set(plot["values"]) == set(SENSORS) and all(len(v) == 100 for v in plot["values"].values())
    assert plot["threshold"] == 1.0 and max(s for s in plot["scores"] if s is not None) >= 1.0
    assert [mk["state"] for mk in plot["marks"]] == ["raised"] and plot["marks"][0]["ts"] == events[0].ts
    json.dumps(plot, allow_nan=False)  # strict JSON: what HTTP sends
    with pytest.raises(ops.UnknownMachine, match="no machine 'l1/p9'"):
        ops.machine_status(ms, "l1/p9")


def test_rebaseline_ends_the_alarm_accepted(tmp_path: Path) -> None:
    ms, _, events = pump_set(tmp_path)
    out = ops.rebaseline_machine(ms, "l1/p1", by="operator")
    assert out["was_in_alarm"] and out["accepted_alert_id"] == events[0].alert_id
    assert events[-1].state == "accepted" and "operator" in events[-1].message
    assert ops.machine_status(ms, "l1/p1")["state"] == "normal"


def test_fit_then_roll_back(tmp_path: Path) -> None:
    ms, store, _ = pump_set(tmp_path, until=1000)
    done: list = []
    out = ops.fit_machine(ms, "l1/p1", last_n=300, done=lambda model, exc: done.append((model, exc)))
    assert out == {"machine": "l1/p1", "fit": "requested", "detector": "baseline_t2", "rows": 300}
    assert done[0][1] is None and done[0][0].version == 2  # InlineTrainer: fitted and stored at once
    assert store.versions("l1/p1") == [1, 2] and ms.machines["l1/p1"].model.version == 2
    assert store.read_meta("l1/p1", 2)["n_samples"] == 300

    model = ops.rollback_in_store(store, "l1/p1")
    assert ops.activate(ms, "l1/p1", model) == {"machine": "l1/p1", "active_version": 1, "detector": "baseline_t2"}
    assert store.active_version("l1/p1") == 1 and ms.machines["l1/p1"].model.version == 1
    with pytest.raises(ModelLoadError):
        ops.rollback_in_store(store, "l1/p1")  # nothing older than v1

    with pytest.raises(ValueError, match="unknown machine detector"):
        ops.fit_machine(ms, "l1/p1", detector="nope")
    with pytest.raises(ValueError, match="at least 50"):
        ops.fit_machine(ms, "l1/p1", last_n=10)
    with pytest.raises(ops.UnknownMachine):
        ops.fit_machine(ms, "l1/p9")
