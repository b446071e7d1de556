"""`edge-agent keygen`: secret files with mode 0600, never overwritten without --force, usable as is."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from edge_agent.command_auth import CommandVerifier, load_key, sign
from edge_agent.config import HttpConfig
from edge_agent.http.auth import TokenSource

REPO = Path(__file__).resolve().parents[1]


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent", "keygen", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_keygen_writes_private_files_the_agent_accepts(tmp_path: Path) -> None:
    res = keygen("--dir", str(tmp_path / "keys"))
    assert res.returncode == 0, res.stderr
    key, token = tmp_path / "keys" / "cmd.key", tmp_path / "keys" / "http.token"
    for f in (key, token):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert len(f.read_text().strip()) == 64
    assert key.read_text() != token.read_text()
    # It says where they went and which keys to set.
    assert f"key_file: {key}" in res.stdout and f"token_file: {token}" in res.stdout
    assert "edge-agent sign-command --key-file" in res.stdout
    assert not list((tmp_path / "keys").glob(".*")), "temporary files left behind"

    # The key signs commands the agent's verifier accepts; the token is what the HTTP port expects.
    verifier = CommandVerifier(load_key(str(key)), allow_unsigned=False, max_age_s=60)
    assert verifier.verify("status", sign(load_key(str(key)), "status", {})).command == "status"
    assert TokenSource(HttpConfig(token_file=str(token))).token == token.read_text().strip()

    # And check-config takes them without a warning.
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "commands": {"key_file": str(key)},
                                   "http": {"token_file": str(token)}}))
    check = subprocess.run([sys.executable, "-m", "edge_agent", "check-config", str(cfg)], capture_output=True,
                           text=True, cwd=REPO, timeout=60)
    assert check.returncode == 0 and check.stderr == "", check.stderr


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert keygen("--dir", str(tmp_path)).returncode == 0
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    res = keygen("--dir", str(tmp_path))
    assert res.returncode == 1 and "exists; not replacing it" in res.stderr
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    forced = keygen("--dir", str(tmp_path), "--force", "--only", "command-key")
    assert forced.returncode == 0, forced.stderr
    after = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert after["cmd.key"] != before["cmd.key"] and after["http.token"] == before["http.token"]
    assert stat.S_IMODE((tmp_path / "cmd.key").stat().st_mode) == 0o600
    assert json.dumps(sorted(after)) == json.dumps(["cmd.key", "http.token"])
