"""check-config rejects each broken config that `run` rejects, with the same message naming key,
file and line, and `run` stops before connecting (no traceback, no reconnect loop)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from tls_broker import make_pki

REPO = Path(__file__).resolve().parents[1]


def edge_agent(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT__")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env=full_env)


def base(tmp: Path) -> dict:
    # A port nothing listens on: if `run` got as far as connecting, it would loop, not exit 2.
    return {"state_dir": str(tmp / "state"), "mqtt": {"host": "127.0.0.1", "port": 1, "connect_timeout_s": 1.0},
            "http": {"enabled": False}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _missing_password(tmp: Path, cfg: dict, pki) -> tuple[str, str]:
    cfg["mqtt"].update(username="agent", password_file=str(tmp / "nope.pw"))
    return "mqtt.password_file", "No such file or directory"


def _missing_key_file(tmp: Path, cfg: dict, pki) -> tuple[str, str]:
    cfg["commands"] = {"key_file": str(tmp / "cmd.key")}
    return "commands.key_file", "No such file or directory"


def _empty_token(tmp: Path, cfg: dict, pki) -> tuple[str, str]:
    (tmp / "token").write_text("\n")
    (tmp / "token").chmod(0o600)
    cfg["http"] = {"enabled": True, "port": 0, "token_file": str(tmp / "token")}
    return "http.token_file", "is empty"


def _missing_ca(tmp: Path, cfg: dict, pki) -> tuple[str, str]:
    cfg["mqtt"]["tls"] = {"enabled": True, "ca_file": str(tmp / "ca.pem")}
    return "mqtt.tls.ca_file", "does not exist"


def _ca_not_pem(tmp: Path, cfg: dict, pki) -> tuple[str, str]:
    (tmp / "ca.pem").write_text("this is not a certificate\n")
    cfg["mqtt"]["tls"] = {"enabled": True, "ca_file": str(tmp / "ca.pem")}
    return "mqtt.tls.ca_file", "is not a PEM CA bundle"


def _cert_key_mismatch(tmp: Path, cfg: dict, pki) -> tuple[str, str]:
    cfg["mqtt"]["tls"] = {"enabled": True, "ca_file": str(pki.ca_cert), "cert_file": str(pki.client_cert),
                          "key_file": str(pki.server_key)}
    return "mqtt.tls.cert_file", "do not belong together"


def _state_dir_blocked(tmp: Path, cfg: dict, pki) -> tuple[str, str]:
    (tmp / "blocker").write_text("a file where a directory should be")
    cfg["state_dir"] = str(tmp / "blocker" / "state")
    return "state_dir", "is not a directory"


def _alarm_topic_field(tmp: Path, cfg: dict, pki) -> tuple[str, str]:
    cfg["alarms"] = {"topic": "edge/{gatway_id}/alerts/{series}"}
    return "alarms.topic", "unknown field(s) {gatway_id}"


def _s3_credentials(tmp: Path, cfg: dict, pki) -> tuple[str, str]:
    (tmp / "aws").write_text("[default]\naws_access_key_id = x\n")
    (tmp / "aws").chmod(0o600)
    cfg["s3"] = {"enabled": True, "bucket": "b", "credentials_file": str(tmp / "aws")}
    return "s3.credentials_file", "needs aws_access_key_id and aws_secret_access_key"


BROKEN: dict[str, Callable[[Path, dict, object], tuple[str, str]]] = {
    "missing password_file": _missing_password,
    "missing commands.key_file": _missing_key_file,
    "empty http.token_file": _empty_token,
    "missing TLS ca_file": _missing_ca,
    "TLS ca_file not PEM": _ca_not_pem,
    "TLS cert and key mismatch": _cert_key_mismatch,
    "state_dir not creatable": _state_dir_blocked,
    "alarm topic with an unknown field": _alarm_topic_field,
    "S3 credentials incomplete": _s3_credentials,
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_check_config_rejects_what_run_rejects_naming_key_file_and_line(case: str, tmp_path: Path, pki) -> None:
    cfg = base(tmp_path)
    key, detail = BROKEN[case](tmp_path, cfg, pki)
    path = tmp_path / "agent.yaml"
    text = yaml.safe_dump(cfg, sort_keys=False)
    path.write_text(text)
    # The line of the key's last part in the file (yaml.safe_dump writes one key per line).
    leaf = key.split(".")[-1]
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith(f"{leaf}:"))

    check = edge_agent("check-config", str(path))
    assert check.returncode == 2, check.stdout + check.stderr
    expected = f"{path}:{line}: {key}: "
    problem = next((ln.strip() for ln in check.stderr.splitlines() if ln.strip().startswith(expected)), None)
    assert problem is not None and detail in problem, check.stderr

    run = edge_agent("run", "-c", str(path), timeout=30)
    assert run.returncode == 2, run.stdout + run.stderr
    assert problem in run.stderr, run.stderr  # the same words as check-config
    assert "Traceback" not in run.stderr and "cannot connect" not in run.stderr


def test_an_override_from_the_environment_is_named(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(base(tmp_path)))
    env = {"EDGE_AGENT__MQTT__PASSWORD_FILE": str(tmp_path / "missing"), "EDGE_AGENT__MQTT__USERNAME": "agent"}
    res = edge_agent("check-config", str(path), env=env)
    assert res.returncode == 2
    assert "environment variable EDGE_AGENT__MQTT__PASSWORD_FILE: mqtt.password_file:" in res.stderr, res.stderr


def test_a_good_tls_config_passes_and_changes_nothing(tmp_path: Path, pki) -> None:
    cfg = base(tmp_path)
    cfg["mqtt"]["tls"] = {"enabled": True, "ca_file": str(pki.ca_cert), "cert_file": str(pki.client_cert),
                          "key_file": str(pki.client_key)}
    key = tmp_path / "cmd.key"
    key.write_text("a" * 64)
    key.chmod(0o600)
    cfg["commands"] = {"key_file": str(key)}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = edge_agent("check-config", str(path))
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout and res.stderr == ""
    assert not (tmp_path / "state").exists()  # check-config only checks that it could be made


def test_warnings_do_not_stop_the_agent(tmp_path: Path) -> None:
    cfg = base(tmp_path)
    key = tmp_path / "cmd.key"
    key.write_text("short")
    key.chmod(0o644)
    cfg["commands"] = {"key_file": str(key)}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = edge_agent("check-config", str(path))
    assert res.returncode == 0, res.stderr
    assert "commands.key_file: the key is 5 characters" in res.stderr
    assert "is readable by others (mode 0644); chmod 600 it" in res.stderr


def test_systemd_credentials_are_checked_inside_the_unit_only(tmp_path: Path) -> None:
    cfg = base(tmp_path)
    cfg["commands"] = {"key_file": "credential:command-key"}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # Outside the unit (no CREDENTIALS_DIRECTORY): check-config cannot look, and says so.
    outside = edge_agent("check-config", str(path))
    assert outside.returncode == 0 and "credential:command-key not checked" in outside.stderr, outside.stderr
    # `run` without the credentials cannot work: it stops.
    run = edge_agent("run", "-c", str(path), timeout=30)
    assert run.returncode == 2 and "CREDENTIALS_DIRECTORY is not set" in run.stderr, run.stderr
    # Inside (the directory systemd fills): the credential is checked like a file.
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "command-key").write_text("")
    inside = edge_agent("check-config", str(path), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert inside.returncode == 2 and "commands.key_file: credential:command-key is empty" in inside.stderr, inside.stderr


def test_a_machine_alarm_topic_that_can_be_a_series_one_is_warned_about(tmp_path: Path) -> None:
    cfg = base(tmp_path)
    cfg["subscriptions"] = [{"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}", "machine": "{line}/{machine}"}]
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = edge_agent("check-config", str(path))
    assert res.returncode == 0 and "machines.alarms" not in res.stderr, res.stderr  # the defaults are apart
    # Inside alerts/: machine "line1/m1" and series "line1/m1" would share a topic.
    cfg["machines"] = {"alarms": {"topic": "edge/{gateway_id}/alerts/{machine}"}}
    path.write_text(yaml.safe_dump(cfg))
    res = edge_agent("check-config", str(path))
    assert res.returncode == 0, res.stderr
    assert "machines.alarms.topic" in res.stderr and "can render the same topic for a machine and a series" in res.stderr
    cfg["machines"] = {"alarms": {"topic": "edge/{gateway_id}/alerts/{machin}"}}
    path.write_text(yaml.safe_dump(cfg))
    res = edge_agent("check-config", str(path))
    assert res.returncode == 2 and "unknown field(s) {machin}" in res.stderr, res.stderr
