"""The NAB scorer reproduces NAB's published scores for three reference detection sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.evaluation import nab

SHARED = Path(__file__).resolve().parents[2] / "shared"
NAB_DIR = SHARED / "data" / "nab"

needs_nab = pytest.mark.skipif(
    not (NAB_DIR / "reference" / "expected_scores.json").is_file(),
    reason=f"NAB subset not found at {NAB_DIR} (the repo is expected to sit beside shared/)",
)


@pytest.fixture(scope="module")
def corpus() -> dict[str, tuple[list[float], list[tuple[int, int]]]]:
    windows = nab.load_windows(NAB_DIR / "labels" / "windows.json")
    out = {}
    for name, wins in windows.items():
        ts, _ = nab.read_csv(NAB_DIR / "data" / name)
        out[name] = (ts, nab.window_indices(ts, wins))
    return out


@needs_nab
@pytest.mark.parametrize("detector", ["numenta", "windowedGaussian", "knncad"])
def test_reference_scores_match(detector: str, corpus) -> None:
    expected = json.loads((NAB_DIR / "reference" / "expected_scores.json").read_text())[detector]
    detections = json.loads((NAB_DIR / "reference" / f"{detector}_detections.json").read_text())
    files = {}
    for name, (ts, wins) in corpus.items():
        row_of = {t: i for i, t in enumerate(ts)}
        idx = [row_of[nab.parse_timestamp(s)] for s in detections.get(name, [])]
        files[name] = (len(ts), wins, idx)
    got = nab.score_corpus(files)
    assert set(got) == set(expected)
    for profile, value in expected.items():
        assert got[profile] == pytest.approx(value, abs=0.01), profile


def test_window_rules() -> None:
    p = nab.STANDARD
    wins = [(400, 499)]
    # Earliest detection earns the full tp weight; a later one in the same window is ignored.
    assert nab.score_file(1000, wins, [400, 450], p).raw == pytest.approx(1.0)
    # A detection at the very end of the window still earns a little.
    end = nab.score_file(1000, wins, [499], p).raw
    assert 0 < end < 0.2
    # Probation (150 rows here) ignores detections, so the window is missed.
    assert nab.score_file(1000, wins, [100], p).raw == pytest.approx(-1.0)
    # FP right after a window costs less than one far away (which costs the full fp weight).
    near = nab.score_file(1000, wins, [400, 505], p).raw
    far = nab.score_file(1000, wins, [400, 900], p).raw
    assert far == pytest.approx(1.0 - 0.11)
    assert far < near < 1.0
    assert nab.probation_rows(100_000) == 750


def test_normalized() -> None:
    p = nab.STANDARD
    assert nab.normalized([-2.0], [2], p) == pytest.approx(0.0)
    assert nab.normalized([2.0], [2], p) == pytest.approx(100.0)
