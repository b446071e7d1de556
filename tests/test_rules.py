"""Per-series rules: the example rule set resolves as its comments say, with provenance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_config import EXAMPLE, example_rules

from edge_agent import detectors
from edge_agent.config import ConfigError, load_config
from edge_agent.priority import Priority
from edge_agent.rules import RuleSet

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def example(tmp_path: Path) -> Path:
    """The example config with its commented rule set switched on."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["rules"] = example_rules()["rules"]
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_three_rules_resolve_as_documented(example: Path) -> None:
    rules = RuleSet(load_config(example, environ={}))
    temp = rules.for_topic("plant/line1/m1/temp")
    assert temp.series == "m1/temp" and temp.fields == {"line": "line1", "machine": "m1", "sensor": "temp"}
    assert (temp.detector, dict(temp.params), temp.min_train_samples) == ("statistical", {"k": 4.0}, 300)
    assert (temp.on_delay, temp.clear_after, temp.deadband, temp.unit) == (3, 20, 0.1, "degC")
    assert temp.priority is Priority.LOW  # from the site defaults: temperatures do not set one
    assert temp.limits is None and temp.enabled

    vib = rules.for_topic("plant/line1/m2/vibration")
    assert (vib.detector, vib.min_train_samples, vib.priority, vib.unit) == (detectors.DEFAULT, 2000, Priority.MEDIUM, "mm/s")
    assert vib.clear_after == 10  # the global alarms.clear_after

    p = rules.for_topic("plant/line2/m7/pressure")
    assert p.priority is Priority.CRITICAL and p.unit == "bar"
    assert p.limits is not None and (p.limits.hihi, p.limits.hi, p.limits.lo, p.limits.lolo) == (9.5, 8.0, 1.0, 0.5)
    assert p.limits.deadband == 0.2 and p.limits_priority is Priority.CRITICAL
    other = rules.for_topic("plant/line2/m8/pressure")
    assert other.limits is None and other.priority is Priority.LOW and other.detector == detectors.DEFAULT


def test_provenance_names_the_rule_and_its_line(example: Path) -> None:
    cfg = load_config(example, environ={})
    rules = RuleSet(cfg)
    temp = rules.resolve("m1/temp")  # fields read back from the series template {machine}/{sensor}
    lines = example.read_text().splitlines()

    def line_of(text: str, after: int = 0) -> int:
        return next(i for i, t in enumerate(lines, 1) if i > after and text in t)

    temps_at = line_of("name: temperatures")
    assert temp.sources["detector"] == f"rules[1] 'temperatures' ({example}:{line_of('detector: statistical', temps_at)})"
    assert temp.sources["params"].startswith("rules[1] 'temperatures'")
    assert temp.sources["priority"].startswith("rules[0] 'site defaults'")
    assert temp.sources["limits"] == "default (built in)"
    assert temp.sources["clear_after"].startswith("rules[1]")
    vib = rules.resolve("m2/vibration")
    assert vib.sources["clear_after"] == f"alarms.clear_after ({example}:{line_of('clear_after: 10', next(i for i, t in enumerate(lines, 1) if t.startswith('alarms:')))})"
    assert vib.matched == (0, 2)


def test_later_rules_override_earlier_ones_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "rules:\n"
        "  - match: {series: 'm1/*'}\n    priority: high\n    unit: C\n    detector: statistical\n    params: {k: 5}\n"
        "  - match: {series: 'm1/temp'}\n    priority: 1\n    unit: null\n"
        "  - match: {sensor: temp}\n    detector: adaptive\n"
    )
    s = RuleSet(load_config(path, environ={})).resolve("m1/temp")
    assert s.priority is Priority.LOW  # the later rule, given as a number
    assert s.unit is None  # explicitly unset by the later rule
    # A rule that names a detector replaces the params of an earlier one: they move as one.
    assert s.detector == "adaptive" and dict(s.params) == {}
    assert s.matched == (0, 1, 2)
    t = RuleSet(load_config(path, environ={})).resolve("m2/temp")
    assert (t.priority, t.unit, t.detector) == (Priority.MEDIUM, None, "adaptive")


def test_rules_needing_a_topic_field_wait_for_the_topic(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("rules:\n  - match: {line: l2, sensor: temp}\n    on_delay: 4\n")
    rules = RuleSet(load_config(path, environ={}))
    by_id = rules.resolve("m1/temp")
    assert by_id.on_delay == 1 and len(by_id.undecided) == 1 and "{line}" in by_id.undecided[0]
    assert rules.for_topic("plant/l2/m1/temp").on_delay == 4
    assert rules.for_topic("plant/l1/m1/temp").on_delay == 1


@pytest.mark.parametrize("rule, where, message", [
    ("{match: {series: a}, limits: {hihi: 5, hi: 8}}", "rules[0].limits.hi", "hihi (5) must be at least hi (8)"),
    ("{match: {series: a}, limits: {hi: 5, lo: 5}}", "rules[0].limits.lo", "hi (5) must be greater than lo (5)"),
    ("{match: {series: a}, limits: {hi: 5, lo: 1, deadband: 4}}", "rules[0].limits.deadband", "must be smaller than the gap"),
    ("{match: {series: a}, limits: {deadband: 1}}", "rules[0].limits", "set at least one of hihi, hi, lo, lolo"),
    ("{match: {series: a}, params: {k: 3}}", "rules[0].params", "set detector in the same rule"),
    ("{match: {series: a}, detector: statistical, params: {kk: 3}}", "rules[0].params.kk", "did you mean 'k'?"),
    ("{match: {sensr: temp}, unit: C}", "rules[0].match.sensr", "did you mean 'sensor'?"),
    ("{match: {series: a}, priority: urgent}", "rules[0].priority", "low, medium, high, critical"),
    ("{match: {series: a}}", "rules[0]", "the rule sets nothing"),
    ("{match: {}, unit: C}", "rules[0].match", "at least one condition"),
    ("{match: {series: a}, clear_after: null}", "rules[0].clear_after", "cannot be null"),
])
def test_bad_rules_are_named_with_their_line(tmp_path: Path, rule: str, where: str, message: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(f"gateway_id: gw\nrules:\n  - {rule}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    found = [str(e) for e in err.value.errors]
    assert any(e.startswith(f"{path}:3: {where}: ") and message in e for e in found), found


def test_check_config_series_and_topic(example: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge_agent", "check-config", str(example), *args],
                              capture_output=True, text=True, cwd=REPO, timeout=60)

    res = cli("--series", "m7/pressure")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("series m7/pressure   (machine=m7, sensor=pressure)")
    row = next(line for line in res.stdout.splitlines() if line.strip().startswith("priority"))
    assert "critical" in row and "rules[3] 'discharge pressure'" in row
    doc = json.loads(cli("--topic", "plant/line1/m1/temp", "--json").stdout)
    assert doc["settings"]["detector"] == "statistical" and doc["settings"]["params"] == {"k": 4.0}
    assert doc["set_by"]["unit"].startswith("rules[1] 'temperatures'")
    bad = cli("--topic", "other/x")
    assert bad.returncode == 2 and "matches no subscription" in bad.stderr


def test_sparkplug_subscriptions_offer_their_message_fields(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("subscriptions:\n  - format: sparkplug_b\nrules:\n  - match: {metric: 'Temp*', group: plant}\n    unit: degC\n")
    rules = RuleSet(load_config(path, environ={}))
    assert rules.resolve("plant/line1/m1/Temperature", {"group": "plant", "node": "line1", "device": "m1",
                                                        "metric": "Temperature"}).unit == "degC"
    path.write_text("subscriptions:\n  - format: sparkplug_b\nrules:\n  - match: {sensor: 'temp*'}\n    unit: degC\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "rules[0].match.sensor: no subscription topic defines {sensor}" in str(err.value)
