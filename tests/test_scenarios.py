"""The fault-scenario suite: generated deterministically, scored as documented, and the default
detector's figures on its small size (the full size is in docs/detectors.md)."""

from __future__ import annotations

import numpy as np

from edge_agent.evaluation import scenarios
from edge_agent.evaluation.evaluate import build_config_data


def test_suite_is_deterministic_and_covers_every_kind() -> None:
    a, b = scenarios.build_suite("small"), scenarios.build_suite("small")
    assert [s.name for s in a] == [s.name for s in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.values, y.values)
    assert {s.normal for s in a} == set(scenarios.NORMAL_KINDS)
    assert {f.kind for s in a for f in s.faults} == set(scenarios.FAULT_KINDS)
    assert {s.dt for s in a} == {1.0, 300.0}
    full = scenarios.build_suite("full")
    clean = sum(len(s.values) - 500 for s in full if not s.faults)
    assert clean >= 200_000  # the bar for nuisance alarms counts at least this many


def test_assessment_counts_catches_holds_and_nuisance() -> None:
    f = scenarios.Fault("step", 100, 199)
    r = scenarios.ScenarioResult("noise/step/x", "noise", 400, 300, [f], raised=[40, 103, 260], ended=[(45, "cleared"), (210, "cleared"), (270, "cleared")],
                                 kinds=["spike", "level_shift", "spike"], seconds=0.0)
    (o,), nuisance = scenarios.assess(r)
    assert (o.caught, o.delay, o.held, o.cleared_after, o.explained_as) == (True, 3, True, 11, "level_shift")
    assert nuisance == [40, 260]
    not_held = scenarios.ScenarioResult("n", "noise", 400, 300, [f], raised=[103], ended=[(150, "cleared")], kinds=["spike"], seconds=0.0)
    assert scenarios.assess(not_held)[0][0].held is False
    assert scenarios.fault_free_readings(r) == 300 - (100 + scenarios.GRACE)
    # A sustained fault raised only after its end (at the jump back to normal) is not caught,
    # and that raise is no nuisance either; a spike may still be caught in the grace readings.
    late = scenarios.ScenarioResult("n", "noise", 400, 300, [f], raised=[200], ended=[(215, "cleared")], kinds=["spike"], seconds=0.0)
    (o,), nuisance = scenarios.assess(late)
    assert (o.caught, o.held, nuisance) == (False, False, [])
    spike = scenarios.Fault("spike", 100, 100)
    late_spike = scenarios.ScenarioResult("n", "noise", 400, 300, [spike], raised=[104], ended=[(120, "cleared")], kinds=["level_shift"], seconds=0.0)
    assert scenarios.assess(late_spike)[0][0].caught is True


def test_default_detector_on_the_small_suite() -> None:
    """Every fault kind on every normal kind, at 1 s and 5 min sampling (a few seconds).

    The issue's bar is 100 % caught, >= 95 % held, no nuisance alarm. What this size still
    misses: a step and a drift on a daily cycle sampled every 5 minutes, injected a day or two
    after training, while the daily profile is still rough (docs/detectors.md, "What it
    misses")."""
    cfg = build_config_data(None, None, [])
    assert cfg["detector"]["name"] == "robust"
    s = scenarios.summarise(scenarios.run_suite(scenarios.build_suite("small"), cfg))
    print(scenarios.format_summary(s))
    assert s["nuisance_alarms"] <= 1, s["nuisance"]
    assert s["total"]["caught_pct"] >= 95.0, s["missed"]
    assert s["total"]["held_pct"] >= 95.0, s["not_held"]
    for kind in ("spike", "noise", "stuck"):
        assert s["by_fault"][kind]["caught_pct"] == 100.0, kind
    assert s["by_fault"]["spike"]["delay_median"] == 0.0


def test_one_scenario_runs_alone_and_failures_are_grouped(capsys) -> None:
    """``--only`` reproduces one scenario of the suite by name (its readings and seed are those
    of the whole suite's run), and the summary counts failures by kind/fault/interval."""
    import json

    from edge_agent.evaluation import evaluate

    assert evaluate.main(["--scenarios", "small", "--only", "cycle/step/s0.5/dt300/r0", "--json", "--quiet", "--jobs", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scenarios"] == 1 and out["total"]["faults"] == 1
    alone = scenarios.summarise(scenarios.run_suite([s for s in scenarios.build_suite("small") if s.name == "cycle/step/s0.5/dt300/r0"],
                                                    build_config_data(None, None, [])))
    assert (out["total"], out["nuisance"]) == (alone["total"], alone["nuisance"])
    assert evaluate.main(["--scenarios", "small", "--only", "no-such-scenario", "--quiet"]) == 2
    assert scenarios._group(["cycle/step/s0.5/dt60/r0", "cycle/step/s5/dt60/r1", "noise/drift/s5/dt1/r0"]) == {
        "cycle/step/dt60": 2, "noise/drift/dt1": 1}


def test_unseen_fault_kinds_are_what_they_say_and_scored_as_sustained(capsys) -> None:
    """``--scenarios unseen`` (unseen_faults.py): six kinds of lasting fault no default was chosen
    on, each injected as documented, on every normal kind; scored like the suite's sustained
    faults (caught while it lasts, held to its end)."""
    import json

    from edge_agent.evaluation import evaluate, unseen_faults

    suite = unseen_faults.build_suite()
    assert [s.name for s in suite] == [s.name for s in unseen_faults.build_suite()]
    assert {f.kind for s in suite for f in s.faults} == set(unseen_faults.UNSEEN_KINDS)
    assert {s.normal for s in suite} == set(scenarios.NORMAL_KINDS) and len(suite) == 540
    clean = {s.name: s for s in suite}
    rng = np.random.default_rng(0)
    x = 50.0 + rng.normal(0.0, 1.0, 1000)
    det = np.full(1000, 50.0)
    f = scenarios.Fault("quieter", 500, 799)
    for kind, check in [
        ("quieter", lambda y: np.std(y[500:800] - 50.0) < 0.15 and np.array_equal(y[:500], x[:500])),
        ("dropout", lambda y: np.all(y[500:800] == 0.0) and np.array_equal(y[800:], x[800:])),
        ("clip", lambda y: np.max(y[500:800]) <= np.median(x[450:500]) and np.mean(y[500:800] == np.max(y[500:800])) > 0.3),
        ("oscillation", lambda y: abs(np.max(y[500:800] - x[500:800]) - 3.0) < 0.01),
        ("offset_noise", lambda y: 2.5 < np.mean(y[500:800] - x[500:800]) < 3.5 and np.std(y[500:800] - x[500:800]) > 0.8),
        ("intermittent", lambda y: 0.05 < np.mean(np.abs(y[500:800] - x[500:800]) > 5.9) < 0.15),
    ]:
        y = x.copy()
        unseen_faults.inject(y, det, kind, scenarios.Fault(kind, f.start, f.end), 1.0, 1.0, np.random.default_rng(1))
        assert check(y), kind
    name = "noise/quieter/s0.5/dt1/r0"
    assert name in clean
    assert evaluate.main(["--scenarios", "unseen", "--only", name, "--json", "--quiet", "--jobs", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["size"] == "unseen" and list(out["by_fault"]) == ["quieter"]
    assert out["total"]["faults"] == out["total"]["sustained"] == 1
