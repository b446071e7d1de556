from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from edge_agent.config import AgentConfig, ConfigError, load_config, masked_dump

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "agent.example.yaml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.add(path)
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _keys(ann, path + ".")
        elif inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
            # lists of models: the first item documents them; Optional[model]: the model
            out |= _keys(inner[0], path + (".0." if typing.get_origin(ann) is list else "."))
    return out


def example_rules() -> dict:
    """The commented example rule set in the example config, uncommented."""
    text = EXAMPLE.read_text()
    block = text.split("# --- example rules\n", 1)[1].split("# --- end of example rules", 1)[0]
    return yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))


def _yaml_keys(node: object, prefix: str = "") -> set[str]:
    out = set()
    if isinstance(node, dict):
        for k, v in node.items():
            out.add(f"{prefix}{k}")
            if k != "params":
                out |= _yaml_keys(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for item in node:  # any item may document a key of the list's model
            out |= _yaml_keys(item, f"{prefix}0.")
    return out


def test_example_config_documents_every_key_and_validates() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert data["rules"] == []  # the example rule set is commented out: it documents the keys
    data["rules"] = example_rules()["rules"]
    missing = _keys(AgentConfig) - _yaml_keys(data)
    assert not missing, f"keys not documented in {EXAMPLE.name}: {sorted(missing)}"
    cfg = load_config(EXAMPLE, environ={})
    assert cfg.subscriptions[0].topic == "plant/{line}/{machine}/{sensor}"
    assert cfg.subscriptions[0].qos == 1 and cfg.subscriptions[0].format == "json"
    assert cfg.alarms.topic == "edge/{gateway_id}/alerts/{series}"
    assert cfg.http.host == "127.0.0.1"


def test_unknown_keys_and_bad_values_name_every_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("gateway_id: ok\nmqtt:\n  port: 0\n  hots: x\nalarms: {clear_after: -1}\nbogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={})
    keys = {k for k, _ in err.value.errors}
    assert {"mqtt.port", "mqtt.hots", "alarms.clear_after", "bogus"} <= keys
    assert str(f) in str(err.value)


def test_environment_overrides_contract_keys(tmp_path: Path) -> None:
    env = {
        "EDGE_AGENT__GATEWAY_ID": "gw-env",
        "EDGE_AGENT__STATE_DIR": str(tmp_path / "s"),
        "EDGE_AGENT__MQTT__HOST": "broker.example",
        "EDGE_AGENT__MQTT__PORT": "1884",
        "EDGE_AGENT__HTTP__HOST": "0.0.0.0",
        "EDGE_AGENT__HTTP__PORT": "9000",
        "EDGE_AGENT__SUBSCRIPTIONS__0__QOS": "0",
    }
    cfg = load_config(EXAMPLE, environ=env)
    assert (cfg.gateway_id, cfg.mqtt.host, cfg.mqtt.port) == ("gw-env", "broker.example", 1884)
    assert (cfg.http.host, cfg.http.port, cfg.state_dir) == ("0.0.0.0", 9000, str(tmp_path / "s"))
    assert cfg.subscriptions[0].qos == 0


def test_bad_environment_override_is_an_error_with_its_key() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(EXAMPLE, environ={"EDGE_AGENT__MQTT__PORT": "not-a-port"})
    assert any(k == "mqtt.port" for k, _ in err.value.errors)


def test_templates_and_detector_params_are_checked() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, environ={"EDGE_AGENT__DETECTOR__NAME": "nope"})
    assert "unknown detector" in str(err.value)
    bad = {"subscriptions": [{"topic": "a/{x}", "series": "{y}"}]}
    with pytest.raises(Exception) as err2:
        AgentConfig.model_validate(bad)
    assert "{y}" in str(err2.value)


def test_secrets_are_masked_and_read_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    cfg = load_config(None, environ={"EDGE_AGENT__MQTT__PASSWORD_FILE": str(secret), "EDGE_AGENT__MQTT__USERNAME": "agent"})
    dumped = yaml.safe_dump(masked_dump(cfg))
    assert "hunter2" not in dumped
    from edge_agent.config import read_secret

    assert read_secret(cfg.mqtt.password_file) == "hunter2"
    cred_dir = tmp_path / "creds"
    cred_dir.mkdir()
    (cred_dir / "mqtt-password").write_text("s3cret")
    import os

    old = os.environ.get("CREDENTIALS_DIRECTORY")
    os.environ["CREDENTIALS_DIRECTORY"] = str(cred_dir)
    try:
        assert read_secret("credential:mqtt-password") == "s3cret"
    finally:
        if old is None:
            del os.environ["CREDENTIALS_DIRECTORY"]
        else:
            os.environ["CREDENTIALS_DIRECTORY"] = old


def test_check_config_cli(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "edge_agent", "check-config", str(EXAMPLE)], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert "gateway_id: gw-01" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt: {port: 70000}\nsubscriptions: []\n")
    res = subprocess.run([sys.executable, "-m", "edge_agent", "check-config", str(bad)], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2
    assert "mqtt.port" in res.stderr and "subscriptions" in res.stderr


def test_fit_parameters_beyond_their_bounds_are_a_config_error(tmp_path: Path) -> None:
    """What a fit may cost is bounded at config load too (edge_agent/fit_bounds.py)."""
    path = tmp_path / "agent.yaml"
    path.write_text("detector:\n  name: isolation_forest\n  params: {n_estimators: 20000}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert exc.value.errors[0][0] == "detector.params.n_estimators" and "n_estimators=20000 is outside its bounds [1, 1000]" in exc.value.errors[0][1]
    path.write_text("detector:\n  name: isolation_forest\n  params: {n_estimators: 1000, max_samples: 4096, window: 1024}\n")
    assert load_config(path, environ={}).detector.params["n_estimators"] == 1000
