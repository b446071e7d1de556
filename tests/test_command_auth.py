"""Signed remote commands: wire format, refusals, replay window, CLI and the shell recipe."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent import command_auth
from edge_agent.command_auth import CommandRefused, CommandVerifier, sign

KEY = b"0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
NOW = 1_700_000_000.0


def verifier(**kw) -> CommandVerifier:
    opts = {"key": KEY, "allow_unsigned": False, "max_age_s": 60.0}
    opts.update(kw)
    return CommandVerifier(**opts)


def refused(v: CommandVerifier, command: str, payload: bytes, now: float = NOW) -> str:
    with pytest.raises(CommandRefused) as info:
        v.verify(command, payload, now=now)
    return info.value.reason


def test_good_command_round_trips():
    payload = sign(KEY, "fit", {"series": "m1/temp", "n": 3}, now=NOW, request_id="r-1")
    cmd = verifier().verify("fit", payload, now=NOW + 1)
    assert cmd.command == "fit"
    assert cmd.args == {"series": "m1/temp", "n": 3}
    assert cmd.signed and cmd.request_id == "r-1" and cmd.ts == NOW
    assert len(cmd.nonce) == 32


def test_payload_is_canonical_and_documented_fields_only():
    payload = sign(KEY, "status", {}, now=NOW, nonce="a" * 32, request_id="x")
    obj = json.loads(payload)
    assert set(obj) == {"v", "cmd", "args", "ts", "nonce", "request_id", "sig"}
    assert payload == command_auth.canonical_json(obj)
    # The documented signing input, recomputed independently.
    import hashlib
    import hmac

    body = {k: v for k, v in obj.items() if k != "sig"}
    msg = b"edge-agent-cmd-v1\nstatus\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert obj["sig"] == hmac.new(KEY, msg, hashlib.sha256).hexdigest()


def test_forged_signature_wrong_key_and_tampered_args():
    v = verifier()
    other = sign(b"another key", "fit", {"series": "a"}, now=NOW)
    assert refused(v, "fit", other) == "bad_signature"

    good = json.loads(sign(KEY, "fit", {"series": "a"}, now=NOW))
    good["args"]["series"] = "b"
    assert refused(v, "fit", json.dumps(good).encode()) == "bad_signature"

    good = json.loads(sign(KEY, "fit", {"series": "a"}, now=NOW))
    good["sig"] = "0" * 64
    assert refused(v, "fit", json.dumps(good).encode()) == "bad_signature"


def test_reordered_and_spaced_json_still_verifies():
    # The MAC covers the parsed object, so harmless re-serialisation by a relay is fine.
    obj = json.loads(sign(KEY, "fit", {"b": 1, "a": [1, 2]}, now=NOW))
    relayed = json.dumps(dict(reversed(list(obj.items()))), indent=2).encode()
    assert verifier().verify("fit", relayed, now=NOW).args == {"a": [1, 2], "b": 1}


def test_command_name_from_topic_is_bound():
    payload = sign(KEY, "status", {}, now=NOW)
    v = verifier()
    # Same payload on another topic: the cmd field gives it away...
    assert refused(v, "fit", payload) == "malformed"
    # ...and even with the cmd field rewritten, the MAC binds the topic's command name.
    obj = json.loads(payload)
    obj["cmd"] = "fit"
    assert refused(v, "fit", json.dumps(obj).encode()) == "bad_signature"
    assert v.verify("status", payload, now=NOW).command == "status"


def test_expired_and_future():
    v = verifier(max_age_s=60.0)
    assert refused(v, "fit", sign(KEY, "fit", {}, now=NOW - 60.5)) == "expired"
    assert v.verify("fit", sign(KEY, "fit", {}, now=NOW - 59.5), now=NOW).signed
    assert refused(v, "fit", sign(KEY, "fit", {}, now=NOW + 6)) == "from_future"
    assert v.verify("fit", sign(KEY, "fit", {}, now=NOW + 4), now=NOW).signed


def test_replayed_nonce_refused_within_window_then_expired():
    v = verifier(max_age_s=60.0)
    payload = sign(KEY, "fit", {}, now=NOW)
    v.verify("fit", payload, now=NOW)
    assert refused(v, "fit", payload, now=NOW + 30) == "replayed_nonce"
    # Once the nonce is forgotten the timestamp check still refuses the replay.
    assert refused(v, "fit", payload, now=NOW + 61) == "expired"
    # A different payload reusing the nonce is a replay too (nonces are global).
    same_nonce = sign(KEY, "status", {}, now=NOW + 1, nonce=json.loads(payload)["nonce"])
    assert refused(v, "status", same_nonce, now=NOW + 2) == "replayed_nonce"


def test_nonce_memory_is_bounded_and_fails_closed():
    v = verifier(max_age_s=10.0, nonce_capacity=5)
    for i in range(5):
        v.verify("fit", sign(KEY, "fit", {"i": i}, now=NOW), now=NOW)
    assert v.seen_nonces == 5
    # Full: a new valid command inside the window is refused, not accepted by forgetting.
    assert refused(v, "fit", sign(KEY, "fit", {}, now=NOW + 1), now=NOW + 1) == "replay_cache_full"
    # Once those five are past ts + max_age_s they are forgotten and room is made.
    later = NOW + 10.5
    assert v.verify("fit", sign(KEY, "fit", {}, now=later), now=later).signed
    assert v.seen_nonces == 1
    # Many commands over a long time never grow the set beyond what the window holds.
    for i in range(200):
        t = later + 1 + i * 3.0
        v.verify("fit", sign(KEY, "fit", {"i": i}, now=t), now=t)
        assert v.seen_nonces <= 5


def test_unsigned_refused_unless_allowed():
    raw = json.dumps({"cmd": "status", "args": {"verbose": True}}).encode()
    assert refused(verifier(), "status", raw) == "unsigned"
    cmd = verifier(allow_unsigned=True).verify("status", raw, now=NOW)
    assert cmd.signed is False and cmd.args == {"verbose": True}
    assert verifier(key=None, allow_unsigned=True).verify("status", b"{}", now=NOW).args == {}
    assert refused(verifier(allow_unsigned=True), "fit", raw) == "malformed"


def test_no_key_configured():
    v = verifier(key=None)
    assert refused(v, "fit", sign(KEY, "fit", {}, now=NOW)) == "no_key"
    assert refused(verifier(key=None, allow_unsigned=True), "fit", sign(KEY, "fit", {}, now=NOW)) == "no_key"
    assert refused(v, "fit", b'{"cmd":"fit"}') == "unsigned"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'"fit"',
        b"\xff\xfe",
        b'{"cmd":"fit","cmd":"fit"}',
        b'{"args":[],"sig":"' + b"0" * 64 + b'"}',
        b'{"v":1,"cmd":"fit","ts":NaN,"nonce":"' + b"a" * 32 + b'","sig":"' + b"0" * 64 + b'"}',
        b'{"v":1,"cmd":"fit","ts":1' + b"0" * 400 + b',"nonce":"' + b"a" * 32 + b'","sig":"' + b"0" * 64 + b'"}',
        b'{"v":1,"cmd":"fit","ts":1,"nonce":"short","sig":"' + b"0" * 64 + b'"}',
        b'{"v":1,"cmd":"fit","ts":1,"nonce":"' + b"a" * 32 + b'","sig":"ABC"}',
        b'{"v":2,"cmd":"fit","ts":1,"nonce":"' + b"a" * 32 + b'","sig":"' + b"0" * 64 + b'"}',
        b'{"extra":1}',
        b"[" * 100_000,
        b"{" + b" " * (70 * 1024) + b"}",
    ],
)
def test_malformed(payload):
    assert refused(verifier(allow_unsigned=True), "fit", payload) == "malformed"


def test_bad_topic_command_name():
    assert refused(verifier(), "fit\nx", sign(KEY, "fit", {}, now=NOW)) == "malformed"
    with pytest.raises(ValueError):
        sign(KEY, "fit/x", {})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=512), allow_unsigned=st.booleans())
def test_random_bytes_only_ever_refused(payload, allow_unsigned):
    v = verifier(allow_unsigned=allow_unsigned)
    try:
        cmd = v.verify("fit", payload, now=NOW)
    except CommandRefused as exc:
        assert exc.reason in command_auth.REASONS
    else:
        # Only an unsigned JSON object can get through, and only when allowed.
        assert allow_unsigned and not cmd.signed


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    obj=st.dictionaries(
        st.sampled_from(["v", "cmd", "args", "ts", "nonce", "request_id", "sig", "x"]), json_values, max_size=7
    )
)
def test_random_json_objects_only_ever_refused(obj):
    payload = json.dumps(obj).encode()
    try:
        cmd = verifier(allow_unsigned=True).verify("fit", payload, now=NOW)
    except CommandRefused as exc:
        assert exc.reason in command_auth.REASONS
    else:
        assert not cmd.signed


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_refused(data):
    payload = bytearray(sign(KEY, "fit", {"series": "m1/temp", "k": 3.5}, now=NOW))
    i = data.draw(st.integers(0, len(payload) - 1))
    b = data.draw(st.integers(0, 255).filter(lambda x: x != payload[i]))
    payload[i] = b
    with pytest.raises(CommandRefused):
        verifier().verify("fit", bytes(payload), now=NOW)


# ---- CLI -----------------------------------------------------------------------------------
def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    command_auth.add_arguments(parser)
    rc = command_auth.run(parser.parse_args(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_prints_a_payload_the_verifier_accepts(tmp_path, capsys):
    key_file = tmp_path / "cmd.key"
    key_file.write_text(KEY.decode() + "\n")
    rc, out, _ = _cli(["--key-file", str(key_file), "--command", "fit", '{"series": "m1/temp"}'], capsys)
    assert rc == 0 and out.endswith("\n") and out.count("\n") == 1
    cmd = verifier().verify("fit", out.strip().encode())
    assert cmd.args == {"series": "m1/temp"}


def test_cli_systemd_credential_and_errors(tmp_path, capsys, monkeypatch):
    (tmp_path / "cmdkey").write_text(KEY.decode())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    rc, out, _ = _cli(["--key-file", "credential:cmdkey", "--command", "status"], capsys)
    assert rc == 0 and verifier().verify("status", out.encode()).args == {}

    rc, out, err = _cli(["--key-file", str(tmp_path / "missing"), "--command", "fit"], capsys)
    assert rc == 2 and out == "" and "cannot read secret" in err
    rc, out, err = _cli(["--key-file", "credential:cmdkey", "--command", "fit", "[1]"], capsys)
    assert rc == 2 and out == "" and "JSON object" in err
    rc, out, err = _cli(["--key-file", "credential:cmdkey", "--command", "bad/name"], capsys)
    assert rc == 2 and out == ""


# ---- the documented shell + openssl recipe -------------------------------------------------
def _doc_snippet() -> str:
    doc = command_auth.__doc__
    start = doc.index("# --- sign-command.sh")
    end = doc.index("# --- end", start)
    return textwrap.dedent(doc[start:end].split("\n", 1)[1])


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("args_json", [None, '{"n":2,"series":"line 1/temp"}'])
def test_documented_openssl_snippet_produces_a_valid_command(tmp_path, args_json):
    key_file = tmp_path / "cmd.key"
    key_file.write_text(KEY.decode() + "\n")
    # A stand-in mosquitto_pub records what it would publish and where.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    pub = bindir / "mosquitto_pub"
    pub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/pub.args\ncat > {tmp_path}/pub.payload\n')
    pub.chmod(0o755)
    env = {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "KEY_FILE": str(key_file),
        "GATEWAY": "gw-07",
        "CMD": "fit",
    }
    if args_json is not None:
        env["ARGS"] = args_json
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _doc_snippet()],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / "pub.args").read_text().split("\n")
    assert args[:2] == ["-t", "edge/gw-07/cmd/fit"]
    payload = (tmp_path / "pub.payload").read_bytes()
    v = verifier()
    cmd = v.verify("fit", payload, now=time.time())
    assert cmd.signed
    assert cmd.args == (json.loads(args_json) if args_json else {"series": "m1/temp"})
    # And it is a real signature: the same payload with another key, or on another topic, fails.
    assert refused(verifier(key=b"wrong"), "fit", payload, now=time.time()) == "bad_signature"
    assert refused(v, "fit", payload, now=time.time()) == "replayed_nonce"
