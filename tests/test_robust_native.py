"""robust compiled by mypyc scores exactly as its source does, and a stale build never scores.

``make dev`` compiles ``robust.py`` (scripts/build_native.py); every other test then runs the
compiled detector, as the agent does. Here the same source, loaded interpreted beside it, scores
the same streams: every score, explanation and saved state must be equal, bit for bit. Under
``make test`` (EDGE_AGENT_REQUIRE_COMPILED=1) a missing or stale build fails this file rather
than skipping it: the suite would otherwise test the slower path without saying so.
"""

from __future__ import annotations

import importlib.machinery
import inspect
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edge_agent.detectors import native
from edge_agent.detectors import robust as loaded

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def interpreted() -> ModuleType:
    if not native.is_compiled(loaded):
        if os.environ.get("EDGE_AGENT_REQUIRE_COMPILED"):
            pytest.fail(f"robust is not compiled under make test: {native.STATUS}")
        pytest.skip(f"robust runs {native.STATUS}: nothing to compare")
    module = native.load_source("robust_interpreted")
    assert not native.is_compiled(module)
    return module


def _streams() -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """(values, times, training readings) of each kind of signal the channels see."""
    rng = np.random.default_rng(16)
    out: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    n = 6000
    x = 20.0 + rng.normal(0.0, 1.0, n)
    x[1500] += 12.0
    x[2500] -= 15.0
    x[3000:3300] += 4.0  # a step, held
    x[4000:4300] = x[3999]  # stuck
    x[5000:5300] += rng.normal(0.0, 4.0, 300)  # a burst of noise
    out["noise_faults"] = (x, 1.7e9 + np.arange(n) * 1.0, 500)
    t = 1.7e9 + np.arange(n) * 60.0
    day = 10.0 * np.sin(2 * math.pi * (t % 86400.0) / 86400.0)
    y = 50.0 + day + rng.normal(0.0, 0.5, n)
    y[4500:4800] += np.linspace(0.0, 6.0, 300)  # a drift on the cycle
    out["daily_cycle"] = (y, t, 1500)
    w = 30.0 + np.cumsum(rng.normal(0.0, 0.05, n)) + rng.normal(0.0, 0.3, n)
    w[rng.random(n) < 0.01] += 3.0  # glitches
    w[3500:3800] = np.minimum(w[3500:3800], np.median(w[3450:3500]))  # clipped
    out["wander_glitches_clip"] = (w, 1.7e9 + np.arange(n) * 5.0, 500)
    q = np.round(40.0 + np.cumsum(rng.normal(0.0, 0.02, n)) + rng.normal(0.0, 0.5, n))
    q[3000:3300] += 6.0  # a step on the lattice
    out["quantised"] = (q, 1.7e9 + np.arange(n) * 60.0, 500)
    g = 10.0 + rng.normal(0.0, 1.0, n)
    tg = 1.7e9 + np.arange(n) * 1.0
    tg[2000:] += 3600.0  # an hour's gap
    g[2000] += 9.0  # a spike as it resumes
    g[3000:3300] -= 4.0
    out["gap"] = (g, tg, 500)
    s = np.repeat([0.0, 1.0] * 30, 100)
    s[4000] = 0.5
    out["status"] = (s, 1.7e9 + np.arange(s.shape[0]) * 1.0, 500)
    return out


def _run(cls: type, x: np.ndarray, t: np.ndarray, train: int) -> tuple[list[float], list[tuple], dict, dict]:
    d = cls()
    d.fit(x[:train], t[:train])
    scores: list[float] = []
    explained: list[tuple] = []
    prev_t = t[train - 1]
    for xi, ti in zip(x[train:].tolist(), t[train:].tolist(), strict=True):
        gap = ti - prev_t
        prev_t = ti
        s = d.score_after_gap(xi, ti, gap) if gap > d.gap_s else d.score_one(xi, ti)
        scores.append(s)
        if s >= d.threshold:
            e = d.explain(xi)
            explained.append((len(scores), e.kind, e.direction, e.expected_low, e.expected_high, e.detail))
            if len(explained) % 7 == 0:
                d.rebaseline()
    params, arrays = d.get_state()
    return scores, explained, params, {k: v.tolist() for k, v in arrays.items()}


@pytest.mark.parametrize("name", list(_streams()))
def test_the_compiled_build_scores_every_reading_as_the_source_does(interpreted: ModuleType, name: str) -> None:
    x, t, train = _streams()[name]
    compiled = _run(loaded.RobustDetector, x, t, train)
    source = _run(interpreted.RobustDetector, x, t, train)
    assert compiled[0] == source[0]  # every score, exactly
    assert compiled[1] == source[1]  # every explanation of a raise, and the rebaselines between
    assert compiled[2] == source[2] and compiled[3] == source[3]  # the state it would save
    assert any(s >= 1.0 for s in compiled[0])  # (each stream has something to raise)


def test_a_model_saved_by_one_loads_and_scores_in_the_other(interpreted: ModuleType) -> None:
    x, t, train = _streams()["noise_faults"]
    a = loaded.RobustDetector()
    a.fit(x[:train], t[:train])
    for xi, ti in zip(x[train:2000].tolist(), t[train:2000].tolist(), strict=True):
        a.score_one(xi, ti)
    params, arrays = a.get_state()
    b = interpreted.RobustDetector.from_state(params, arrays)
    c = loaded.RobustDetector.from_state(params, arrays)
    rest = list(zip(x[2000:].tolist(), t[2000:].tolist(), strict=True))
    assert [b.score_one(xi, ti) for xi, ti in rest] == [c.score_one(xi, ti) for xi, ti in rest]


def test_the_declared_parameters_are_the_constructors(interpreted: ModuleType) -> None:
    sig = inspect.signature(interpreted.RobustDetector.__init__)
    declared = dict(loaded.RobustDetector.init_params)
    assert declared == {k: p.default for k, p in sig.parameters.items() if k != "self"}


def test_a_build_is_used_only_while_it_is_the_sources(tmp_path: Path) -> None:
    (tmp_path / "robust.py").write_text("x = 1\n")
    assert native.choose(tmp_path, {}) == (False, "interpreted (no compiled build: make native)")
    suffix = next(s for s in importlib.machinery.EXTENSION_SUFFIXES if s != ".so")
    (tmp_path / f"robust{suffix}").write_bytes(b"\0")
    assert native.choose(tmp_path, {})[1].startswith("interpreted (robust.py changed since")  # no digest
    (tmp_path / native.DIGEST_NAME).write_text(native.digest_of(b"x = 1\n") + "\n")
    assert native.choose(tmp_path, {})[0] is True
    assert native.choose(tmp_path, {native.PURE_ENV: "1"}) == (False, f"interpreted ({native.PURE_ENV} is set)")
    (tmp_path / "robust.py").write_text("x = 2\n")  # edited after the build
    assert native.choose(tmp_path, {}) == (False, "interpreted (robust.py changed since its compiled build: make native)")


def test_an_interpreted_run_loads_the_source_past_a_build(interpreted: ModuleType) -> None:
    code = ("from edge_agent.detectors import native, robust; "
            "import numpy as np; d = robust.RobustDetector(); d.fit(np.arange(600.0) % 7); "
            "print(native.is_compiled(robust), native.STATUS, d.score_one(3.0) < 1.0)")
    env = {**os.environ, native.PURE_ENV: "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split(" ", 1) == ["False", f"interpreted ({native.PURE_ENV} is set) True\n"], done.stderr
