"""``evaluate`` end to end on a few real NAB files, through the live Pipeline path."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.evaluation import evaluate, nab, scenarios

NAB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"
FILES = ["realAdExchange/exchange-2_cpm_results.csv", "realAdExchange/exchange-3_cpm_results.csv", "artificialNoAnomaly/art_flatline.csv"]

pytestmark = pytest.mark.skipif(not (NAB_DIR / "labels" / "windows.json").is_file(), reason=f"NAB subset not found at {NAB_DIR}")


@pytest.fixture()
def labels_file(tmp_path: Path) -> Path:
    raw = json.loads((NAB_DIR / "labels" / "windows.json").read_text())
    p = tmp_path / "windows.json"
    p.write_text(json.dumps({f: raw[f] for f in FILES}))
    return p


def _run(labels: Path, *extra: str, capsys) -> tuple[int, dict, str]:
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(["--data", str(NAB_DIR / "data"), "--labels", str(labels), "--json", "--quiet", "--jobs", "1", *extra])
    rc = evaluate.run(args)
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if rc == 0 else {}), cap.err


def test_evaluate_adaptive_end_to_end(labels_file: Path, capsys) -> None:
    rc, summary, _ = _run(labels_file, "--detector", "adaptive", capsys=capsys)
    assert rc == 0
    assert summary["detector"] == "adaptive"
    files = {f["file"]: f for f in summary["files"]}
    assert set(files) == set(FILES)
    assert files["artificialNoAnomaly/art_flatline.csv"]["alarms"] == 0
    # Recompute the total from the per-file detections' raw scores: the table is consistent.
    t = summary["total"]
    assert t["windows"] == sum(f["windows"] for f in files.values()) == 3
    assert t["alarms"] == sum(f["alarms"] for f in files.values())
    assert t["score"]["standard"] == pytest.approx(
        nab.normalized([f["raw"]["standard"] for f in files.values()], [f["windows"] for f in files.values()], nab.STANDARD))
    # adaptive catches both exchange windows of exchange-2_cpm and scores well on this subset.
    assert files["realAdExchange/exchange-2_cpm_results.csv"]["windows_detected"] == 2
    assert t["score"]["standard"] > 50


def test_overrides_reach_the_detector_and_alarm_logic(labels_file: Path, capsys) -> None:
    rc, strict, _ = _run(labels_file, "--detector", "statistical", "--set", "detector.params.k=3", capsys=capsys)
    assert rc == 0
    rc, loose, _ = _run(labels_file, "--detector", "statistical", "--set", "detector.params.k=12", "--set", "alarms.clear_after=50", capsys=capsys)
    assert rc == 0
    assert loose["params"] == {"k": 12} and loose["clear_after"] == 50
    assert loose["total"]["alarms"] < strict["total"]["alarms"]


def test_detections_are_the_rows_where_pipeline_raised(labels_file: Path) -> None:
    cfg = evaluate.build_config_data(None, "statistical", ["detector.params.k=3"])
    name = FILES[0]
    windows = nab.load_windows(labels_file)[name]
    res = evaluate.evaluate_file(str(NAB_DIR / "data"), name, windows, cfg, split="agent")
    assert res.detections and min(res.detections) >= cfg["detector"]["min_train_samples"]  # no alarm while learning
    assert res.detections == sorted(set(res.detections))
    # NAB's own split: the detector learns in the probationary period (15 % of this 1,624-row
    # file, 243 rows), so it scores, and may raise, from there on, before the agent's 500.
    probation = nab.probation_rows(res.rows)
    assert probation == 243 < cfg["detector"]["min_train_samples"]
    touchy = evaluate.build_config_data(None, "statistical", ["detector.params.k=1"])  # raises soon after it scores
    early = evaluate.evaluate_file(str(NAB_DIR / "data"), name, windows, touchy)
    late = evaluate.evaluate_file(str(NAB_DIR / "data"), name, windows, touchy, split="agent")
    assert probation <= min(early.detections) < cfg["detector"]["min_train_samples"] <= min(late.detections)


def test_the_nab_split_reaches_every_file_and_is_named_in_the_report(labels_file: Path, capsys) -> None:
    touchy = ("--detector", "statistical", "--set", "detector.params.k=1")
    rc, probation, _ = _run(labels_file, *touchy, capsys=capsys)
    assert rc == 0 and probation["nab_split"] == "probation"
    rc, agent, _ = _run(labels_file, *touchy, "--nab-split", "agent", capsys=capsys)
    assert rc == 0 and agent["nab_split"] == "agent"
    # Scoring from row ~240 instead of 500 on the two exchange files changes what is raised.
    assert probation["total"]["alarms"] != agent["total"]["alarms"]


def test_bad_input_is_a_clear_error(labels_file: Path, capsys) -> None:
    rc, _, err = _run(labels_file, "--detector", "nope", capsys=capsys)
    assert rc == 2 and "unknown detector" in err
    rc, _, err = _run(labels_file, "--set", "detector.params", capsys=capsys)
    assert rc == 2 and "key=value" in err


def test_default_detector_json_keeps_the_shape_the_pre_stop_hook_reads(labels_file: Path, capsys) -> None:
    rc, summary, _ = _run(labels_file, capsys=capsys)
    assert rc == 0 and summary["detector"] == "robust"
    t = summary["total"]
    for key in ("windows_detected", "windows", "false_positives"):
        assert isinstance(t[key], int)
    assert set(t["score"]) >= {"standard", "reward_low_FP_rate"}
    files = {f["file"]: f for f in summary["files"]}
    assert files["artificialNoAnomaly/art_flatline.csv"]["alarms"] == 0


def test_leave_one_category_out(labels_file: Path, capsys) -> None:
    rc, summary, _ = _run(labels_file, "--loco", "detector.params.threshold=1.0,1.5", capsys=capsys)
    assert rc == 0
    loco = summary["loco"]
    assert loco["key"] == "detector.params.threshold"
    std = loco["standard"]
    assert {c["category"] for c in std["per_category"]} == {"realAdExchange", "artificialNoAnomaly"}
    assert set(std["score_by_value"]) == {"1.0", "1.5"}
    # The held-out score uses, per category, the value chosen on the other categories only.
    assert std["loco_score"] <= std["in_sample_best"]["score"] + 1e-9
    rc, _, err = _run(labels_file, "--loco", "detector.params.threshold=1.0", capsys=capsys)
    assert rc == 2 and "at least two values" in err


SKAB_DIR = NAB_DIR.parent / "skab" / "data"


@pytest.mark.skipif(not (SKAB_DIR / "valve1").is_dir(), reason=f"SKAB not found at {SKAB_DIR}")
def test_skab_per_sensor_beside_the_published_results(capsys) -> None:
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    rc = evaluate.run(parser.parse_args(["--skab", str(SKAB_DIR), "--json", "--quiet", "--jobs", "1"]))
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["files"] == 16 and s["rows_scored"] == 11_760
    assert len(s["per_sensor"]) == 8 and "Conv-AE" in s["published_outlier"]
    o = s["outlier"]
    assert o["tp"] + o["fn"] > 0 and 0.0 <= o["f1"] <= 1.0
    assert s["anomaly_free"]["rows_scored"] == 9405 - 400
    # Every false-alarm row is placed once, pooled: the breakdown adds up to FAR's numerator.
    f = s["false_alarm_rows"]
    assert f["rows"] == o["fp"] == f["early"] + f["held_past_fault"] + f["nuisance"]
    assert f["normal_rows"] == o["fp"] + o["tn"]
    assert all(c["rows"] == c["early"] + c["held_past_fault"] + c["nuisance"] > 0 for c in f["by_file_sensor"])


def test_skab_false_alarm_rows_are_placed_by_their_alarm_span() -> None:
    from edge_agent.evaluation.skab_eval import false_rows_by_kind

    label = np.zeros(30, dtype=bool)
    label[10:15] = True
    alarm = np.zeros(30, dtype=bool)
    alarm[7:19] = True  # raised 3 rows before the fault, held 4 rows past its end
    alarm[22:25] = True  # a span that touches no labelled row
    assert false_rows_by_kind(label, alarm) == {"early": 3, "held_past_fault": 4, "nuisance": 3}
    alarm[:] = False
    alarm[12:14] = True  # inside the fault: no false row
    assert false_rows_by_kind(label, alarm) == {"early": 0, "held_past_fault": 0, "nuisance": 0}
    label[20:22] = True  # a span across two faults: rows between them were held past the first
    alarm[:] = False
    alarm[12:21] = True
    assert false_rows_by_kind(label, alarm) == {"early": 0, "held_past_fault": 5, "nuisance": 0}


def test_scenarios_command_and_bad_modes(capsys) -> None:
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    rc = evaluate.run(parser.parse_args(["--scenarios", "small", "--detector", "statistical", "--json", "--quiet", "--jobs", "1"]))
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["detector"] == "statistical" and s["scenarios"] == 60 and s["total"]["faults"] == 70
    rc = evaluate.run(parser.parse_args(["--quiet"]))
    assert rc == 2 and "give one of" in capsys.readouterr().err


def test_scenarios_on_another_seed_of_the_suite(capsys) -> None:
    # The suite's figures in docs/detectors.md are seed 0's; the defaults were judged on it, so
    # other seeds are realisations nothing was chosen on (a change measured on one seed was
    # decided by a single knife-edge fault). Same scenarios, other signals.
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = ["--scenarios", "small", "--detector", "statistical", "--only", "wander/clean", "--json", "--quiet", "--jobs", "1"]
    runs = {}
    for seed in (0, 1):
        assert evaluate.run(parser.parse_args([*args, "--suite-seed", str(seed)])) == 0
        runs[seed] = json.loads(capsys.readouterr().out)
    assert runs[0]["seed"] == 0 and runs[1]["seed"] == 1
    assert runs[0]["scenarios"] == runs[1]["scenarios"] == 2
    a, b = (scenarios.build_suite("small", seed=s) for s in (0, 1))
    assert [sc.name for sc in a] == [sc.name for sc in b]
    assert not any(np.array_equal(x.values, y.values) for x, y in zip(a, b, strict=True))
    assert evaluate.run(parser.parse_args([*args, "--suite-seed", "-1"])) == 2
    assert "--suite-seed" in capsys.readouterr().err
