"""Config errors name the key, the file and the line (or the environment variable), in the config's words."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def errors_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> tuple[Path, list[str]]:
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f, environ=environ or {})
    return f, [str(e) for e in err.value.errors]


def test_unknown_keys_name_file_line_and_a_close_key(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "gateway_id: ok\nmqtt:\n  port: 1883\n  hots: broker\n  tls:\n    enabeld: true\nbogus: 1\n")
    assert f"{f}:4: mqtt.hots: unknown key (did you mean 'host'?)" in errs
    assert f"{f}:6: mqtt.tls.enabeld: unknown key (did you mean 'enabled'?)" in errs
    # Nothing close: the keys allowed at that level are listed.
    bogus = next(e for e in errs if "bogus" in e)
    assert bogus.startswith(f"{f}:7: bogus: unknown key (allowed here: alarms, commands,")


def test_bad_values_name_their_line(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "mqtt:\n  port: 70000\nsubscriptions:\n  - topic: plant/{a}/{b}\n    qos: 5\n")
    assert f"{f}:2: mqtt.port: must be less than or equal to 65535" in errs
    assert f"{f}:5: subscriptions[0].qos: must be 0, 1 or 2" in errs


def test_environment_override_errors_name_the_variable(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "mqtt:\n  port: 1883\n", {
        "EDGE_AGENT__MQTT__PORT": "not-a-port",
        "EDGE_AGENT__MQTT__PORTT": "1884",
        "EDGE_AGENT__SUBSCRIPTIONS__3__QOS": "1",
    })
    assert any(e.startswith("environment variable EDGE_AGENT__MQTT__PORT: mqtt.port: must be a valid integer") for e in errs), errs
    assert ("environment variable EDGE_AGENT__MQTT__PORTT: mqtt.portt: unknown key (did you mean EDGE_AGENT__MQTT__PORT?)"
            in errs), errs
    assert any(e.startswith("environment variable EDGE_AGENT__SUBSCRIPTIONS__3__QOS:") for e in errs), errs
    assert not any(e.startswith(f"{f}:") for e in errs), "an override's error must not be blamed on the YAML file"


def test_yaml_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "gateway_id: a\nmqtt:\n  host: [broker\n  port: 1\n")
    assert len(errs) == 1 and errs[0].startswith(f"{f}:4: (yaml): YAML syntax:"), errs
    assert "started on line 3" in errs[0] and "<unicode string>" not in errs[0]
    f, errs = errors_of(tmp_path, "mqtt:\n\thost: a\n")
    assert errs[0].startswith(f"{f}:2:") and "never tabs" in errs[0]


def test_duplicate_keys_are_errors_naming_both_lines(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "log:\n  level: INFO\nmqtt: {}\nlog:\n  level: DEBUG\n")
    assert errs == [f"{f}:4: log: appears twice (also on line 1)"]


def test_detector_params_errors_speak_the_configs_language(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "detector:\n  name: adaptive\n  params:\n    k: 3.0\n")
    assert errs == [f"{f}:4: detector.params.k: unknown parameter 'k' for detector 'adaptive' "
                    "(known: alpha, k_min, surprise, memory, margin, rel_floor, threshold)"]
    f, errs = errors_of(tmp_path, "detector:\n  name: adaptive\n  params: {kmin: 3.0}\n")
    assert errs[0].endswith("did you mean 'k_min'?")
    f, errs = errors_of(tmp_path, "detector:\n  name: adaptive\n  params:\n    alpha: fast\n")
    assert errs == [f"{f}:4: detector.params.alpha: must be a number (got 'fast')"]
    f, errs = errors_of(tmp_path, "detector:\n  name: statistical\n  params:\n    k: -1\n")
    assert errs == [f"{f}:4: detector.params.k: k must be a positive number"]
    assert not any("__init__" in e or "keyword argument" in e for e in errs)


def test_check_config_prints_the_located_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  hots: x\n")
    res = subprocess.run([sys.executable, "-m", "edge_agent", "check-config", str(bad)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 2
    assert f"{bad}:2: mqtt.hots: unknown key (did you mean 'host'?)" in res.stderr
