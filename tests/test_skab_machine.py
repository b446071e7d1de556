"""``evaluate --skab DIR --machine``: SKAB through Ingest.handle, the bench as one machine."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from helpers import SHARED

from edge_agent.evaluation import evaluate, skab, skab_blind_spot, skab_machine

SKAB = SHARED / "data" / "skab" / "data"
pytestmark = pytest.mark.skipif(not SKAB.is_dir(), reason="SKAB data not beside the repo")


def test_one_file_follows_the_benchmark_split_through_the_live_path() -> None:
    f = skab.read_file(SKAB, "valve1/13.csv")
    run = skab_machine.replay(f, skab_machine.agent_config())
    assert run.scored_from == skab.FIT_ROWS  # 400 rows fit, the first scored row is the 401st
    assert not run.machine_alarm[: skab.FIT_ROWS].any() and not run.series_alarm[: skab.FIT_ROWS].any()
    part = skab.scored_part(f)
    s = skab.outlier_score([(f.anomaly[part], run.machine_alarm[part])])
    assert s.far < 5 and s.mar < 25  # the valve closing in this file is clear in the flow
    first = int(np.flatnonzero(run.machine_raise)[0])
    assert f.anomaly[first] and first - int(np.flatnonzero(f.anomaly)[0]) < 60
    assert run.stats["sensors"].keys() == set(f.sensors)


def test_injection_moves_one_sensor_by_its_fit_spread_in_each_episode() -> None:
    f = skab.read_file(SKAB, skab.ANOMALY_FREE)
    x = skab_blind_spot.inject(f, 2, 6.0, 120.0)
    sd = f.values[: skab.FIT_ROWS, 2].std()
    diff = x - f.values
    assert np.all(diff[:, [0, 1, 3, 4, 5, 6, 7]] == 0)
    starts = skab_blind_spot.episodes(len(x))
    assert starts[0] == 1000 and len(starts) == 7
    ep = diff[starts[0]:starts[0] + skab_blind_spot.EPISODE_ROWS, 2] / sd
    assert ep[0] == 0 and ep[-1] == pytest.approx(6.0) and np.all(np.diff(ep) > -1e-9)
    assert np.count_nonzero(diff[:, 2]) == 7 * (skab_blind_spot.EPISODE_ROWS - 1)


def test_a_large_step_is_flagged_and_blamed_on_its_sensor() -> None:
    r = skab_blind_spot.run_one(str(SKAB), skab_machine.agent_config(), 7, "step -12")
    flagged = [s for s, blamed in r["episodes"].items() if "Volume Flow RateRMS" in blamed]
    assert len(flagged) == 7


def test_the_command_reports_machine_and_per_series_figures(capsys) -> None:
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(["--skab", str(SKAB), "--machine", "--json", "--quiet", "--jobs", "2"])
    assert evaluate.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    v, free = out["valve1"], out["anomaly_free"]
    assert v["files"] == 16 and v["changepoint_ceiling_one_raise"] < 25.4
    m = v["machine"]
    # Regression guards at issue 14's targets (docs/machines.md has the figures): F1 0.85 is
    # missed by a hair in-sample (0.848) with the anomaly-free-chosen defaults.
    assert m["outlier"]["f1"] > 0.82 and m["outlier"]["far_pct"] <= 10 and m["outlier"]["mar_pct"] <= 25
    assert m["changepoint_nab"]["standard"] >= 20
    assert free["machine"]["alarms_per_1000"] < 1 and free["machine"]["time_in_alarm_pct"] < 5
    # Beside the per-series default on the same rows: at least as many faults found, with fewer
    # normal rows flagged (robust per sensor: F1 0.80 at FAR 12 % since issue 13's round 2, 0.80
    # at 32 % before; machine: 0.85 at 7 %).
    per_series = v["per_series_default"]["outlier"]
    assert m["outlier"]["f1"] >= per_series["f1"] and m["outlier"]["far_pct"] < per_series["far_pct"]


def test_bad_arguments_are_refused(capsys) -> None:
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    assert evaluate.run(parser.parse_args([])) == 2
    assert "--data DIR --labels FILE" in capsys.readouterr().err
    assert evaluate.run(parser.parse_args(["--skab", str(SKAB), "--machine", "--set", "machines.detector.params.k=-1"])) == 2
    assert "machines.detector" in capsys.readouterr().err
