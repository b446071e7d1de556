"""``edge-agent models list/show/rollback`` with machines: the machine store beside the series'."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_agent.machine_detectors.baseline_t2 import BaselineT2Detector
from edge_agent.model_store import ModelStore


def fitted_machine() -> BaselineT2Detector:
    rng = np.random.default_rng(1)
    load = np.cumsum(rng.normal(0, 0.05, 400))
    rows = np.column_stack([10 + load + rng.normal(0, 0.01, 400), 5 + 2 * load + rng.normal(0, 0.02, 400)])
    det = BaselineT2Detector()
    det.fit(rows, np.arange(400.0), ["flow", "current"])
    return det


def cli(state: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_agent", "models", *args, "--state-dir", str(state)], capture_output=True, text=True)


def test_models_list_shows_machines_and_show_rollback_take_a_machine_id(tmp_path: Path) -> None:
    machines = ModelStore.for_machines(tmp_path / "machine_models")
    machines.save("line1/p7", fitted_machine(), n_samples=400)
    machines.save("line1/p7", fitted_machine(), n_samples=400)
    (tmp_path / "models").mkdir()

    res = cli(tmp_path, "list", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [{"machine": "line1/p7", "active": 2, "versions": [1, 2], "detector": "baseline_t2",
                                       "status": "ok", "problems": []}]
    table = cli(tmp_path, "list").stdout
    assert "MACHINE" in table and "line1/p7" in table and "baseline_t2" in table

    shown = cli(tmp_path, "show", "line1/p7", "--machine")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["detector"] == "baseline_t2" and json.loads(shown.stdout)["active"] is True
    assert cli(tmp_path, "show", "line1/p7").returncode == 1  # not a series

    back = cli(tmp_path, "rollback", "line1/p7", "--machine")
    assert back.returncode == 0, back.stderr
    assert machines.active_version("line1/p7") == 1

    # A broken machine model is reported, as a series' is.
    (machines.version_dir("line1/p7", 1) / "meta.json").write_text("{")
    res = cli(tmp_path, "list", "--json")
    assert res.returncode == 1
    (row,) = json.loads(res.stdout)
    assert row["machine"] == "line1/p7" and row["status"] == "problem"
