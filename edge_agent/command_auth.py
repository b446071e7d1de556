r"""Authenticated remote commands: HMAC-SHA256 signed, fresh, never replayed.

Commands arrive on ``edge/{gateway_id}/cmd/{command}``. The payload is one JSON object
(UTF-8, at most 64 KiB)::

    {"v": 1, "cmd": "fit", "args": {"series": "m1/temp"}, "ts": 1700000000,
     "nonce": "9f2c...", "request_id": "a1b2...", "sig": "<64 lowercase hex>"}

======== ==========================================================================
field    meaning
======== ==========================================================================
v        wire format version, must be ``1`` (signed commands)
cmd      the command name; must equal the last topic segment
args     JSON object of command arguments (optional, default ``{}``)
ts       sender's Unix time in seconds (int or float)
nonce    16-128 chars of ``[A-Za-z0-9_-]``, unique per command (e.g. 16 random bytes hex)
request_id  optional string (<= 128 chars) echoed in replies
sig      ``hex(HMAC-SHA256(key, signing_input))``, 64 lowercase hex digits
======== ==========================================================================

No other top-level field is allowed (every field except ``sig`` is signed, so adding
one is a format change, i.e. a new ``v``).

Signing input (bytes)::

    b"edge-agent-cmd-v1\n" + command + b"\n" + canonical_json(payload without "sig")

* ``command`` is the command name **from the topic** (``[A-Za-z0-9_.-]{1,64}``, so it
  cannot contain the newline separator). Binding it into the signature means a signed
  ``status`` cannot be replayed on ``.../cmd/fit``; the ``cmd`` field must match too.
* ``canonical_json`` is ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
  ensure_ascii=True, allow_nan=False)`` of the *parsed* object: keys sorted at every
  level, no whitespace, non-ASCII as ``\uXXXX``. Because the verifier signs what it
  parsed (not the raw bytes), what is checked is exactly what is executed; duplicate
  keys are refused as malformed. An operator writing JSON by hand gets the canonical
  form by writing keys in sorted order with no spaces, integers for ``ts``, and plain
  ASCII strings: then the text they typed *is* the canonical form.
* ``key`` is the secret from ``commands.key_file`` (a file, or ``credential:NAME`` for
  a systemd credential) as UTF-8 bytes with surrounding whitespace stripped. Generate it
  with ``openssl rand -hex 32 > cmd.key`` (the hex *text* is the key).

Freshness: a command is refused as ``expired`` when ``now - ts > max_age_s`` and as
``from_future`` when ``ts - now > max_future_s`` (clock skew allowance, default 5 s).
A nonce is refused as ``replayed_nonce`` when it was already accepted and is still
inside its validity window, also across restarts (the agent keeps accepted nonces in
``nonce_journal``).

Refusal reasons (``CommandRefused.reason``, stable codes for logs and metrics):
``unsigned``, ``bad_signature``, ``expired``, ``from_future``, ``replayed_nonce``,
``malformed``, ``no_key``, ``replay_cache_full``.

Operator recipe with only a POSIX shell and openssl (this exact block is run by
``tests/test_command_auth.py``)::

    # --- sign-command.sh: KEY_FILE, GATEWAY, CMD and ARGS may come from the environment
    KEY_FILE=${KEY_FILE:-/etc/edge-agent/cmd.key} GATEWAY=${GATEWAY:-gw-01} CMD=${CMD:-fit}
    ARGS=${ARGS:-'{"series":"m1/temp"}'}  # a JSON object: sorted keys, no spaces, ASCII
    KEY=$(tr -d ' \t\r\n' < "$KEY_FILE")
    BODY=$(printf '{"args":%s,"cmd":"%s","nonce":"%s","request_id":"%s","ts":%s,"v":1}' \
        "$ARGS" "$CMD" "$(openssl rand -hex 16)" "$(openssl rand -hex 8)" "$(date +%s)")
    SIG=$(printf 'edge-agent-cmd-v1\n%s\n%s' "$CMD" "$BODY" \
        | openssl dgst -sha256 -mac HMAC -macopt "key:$KEY" | awk '{print $NF}')
    printf '%s,"sig":"%s"}' "${BODY%\}}" "$SIG" \
        | mosquitto_pub -t "edge/$GATEWAY/cmd/$CMD" -q 1 -s
    # --- end

(``-macopt key:...`` puts the key on openssl's command line, visible to other local
users via ``ps`` for a moment: run it on a trusted operator machine.) The same payload
comes from ``edge-agent sign-command --key-file cmd.key --command fit '{"series":
"m1/temp"}' | mosquitto_pub -t edge/gw-01/cmd/fit -q 1 -s``.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import hmac
import json
import math
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

WIRE_VERSION = 1
SIGNING_PREFIX = b"edge-agent-cmd-v1\n"
MAX_PAYLOAD_BYTES = 64 * 1024
DEFAULT_NONCE_CAPACITY = 10_000
DEFAULT_MAX_FUTURE_S = 5.0

_COMMAND_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_SIG_RE = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = frozenset({"v", "cmd", "args", "ts", "nonce", "request_id", "sig"})

REASONS = (
    "unsigned",
    "bad_signature",
    "expired",
    "from_future",
    "replayed_nonce",
    "malformed",
    "no_key",
    "replay_cache_full",
)


class CommandRefused(Exception):
    """A command that must not be executed; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class VerifiedCommand:
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    signed: bool = False
    ts: float | None = None
    nonce: str | None = None
    request_id: str | None = None


def canonical_json(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def signing_input(command: str, unsigned_payload: dict[str, Any]) -> bytes:
    return SIGNING_PREFIX + command.encode("ascii") + b"\n" + canonical_json(unsigned_payload)


def _mac(key: bytes, command: str, unsigned_payload: dict[str, Any]) -> str:
    return hmac.new(key, signing_input(command, unsigned_payload), hashlib.sha256).hexdigest()


def load_key(ref: str | None) -> bytes | None:
    """The command key from a ``*_file`` reference (path or ``credential:NAME``), or None."""
    from edge_agent.config import read_secret

    text = read_secret(ref)
    if not text:
        return None
    return text.encode("utf-8")


def sign(
    key: bytes,
    command: str,
    body: dict[str, Any],
    *,
    now: float | None = None,
    nonce: str | None = None,
    request_id: str | None = None,
) -> bytes:
    """The signed payload to publish on ``.../cmd/{command}``; ``body`` is the command's args."""
    if not key:
        raise ValueError("an empty key cannot sign")
    if not _COMMAND_RE.match(command):
        raise ValueError(f"command name {command!r} must match {_COMMAND_RE.pattern}")
    if not isinstance(body, dict):
        raise TypeError("body (the command args) must be a dict")
    nonce = secrets.token_hex(16) if nonce is None else nonce
    if not _NONCE_RE.match(nonce):
        raise ValueError(f"nonce must match {_NONCE_RE.pattern}")
    ts: float | int = time.time() if now is None else now
    if isinstance(ts, float):
        ts = round(ts, 3)
    payload: dict[str, Any] = {
        "v": WIRE_VERSION,
        "cmd": command,
        "args": body,
        "ts": ts,
        "nonce": nonce,
        "request_id": secrets.token_hex(8) if request_id is None else request_id,
    }
    # Round-trip through JSON so the MAC is computed over exactly what the verifier will
    # parse (e.g. tuples become lists, int keys become strings).
    payload = json.loads(canonical_json(payload))
    payload["sig"] = _mac(key, command, payload)
    return canonical_json(payload)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse(payload: bytes) -> dict[str, Any]:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CommandRefused("malformed", "payload is not bytes")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandRefused("malformed", f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        obj = json.loads(
            bytes(payload).decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandRefused("malformed", f"not a JSON object: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandRefused("malformed", "payload is not a JSON object")
    return obj


class CommandVerifier:
    """Checks signature, freshness and nonce uniqueness of command payloads.

    Thread-safe. The nonce memory is bounded by ``nonce_capacity``.
    """

    def __init__(
        self,
        key: bytes | None,
        allow_unsigned: bool,
        max_age_s: float,
        nonce_capacity: int = DEFAULT_NONCE_CAPACITY,
        *,
        max_future_s: float = DEFAULT_MAX_FUTURE_S,
    ) -> None:
        if not (max_age_s > 0 and math.isfinite(max_age_s)):
            raise ValueError("max_age_s must be a positive number")
        if nonce_capacity < 1:
            raise ValueError("nonce_capacity must be >= 1")
        self._key = key or None
        self.allow_unsigned = allow_unsigned
        self.max_age_s = float(max_age_s)
        self.max_future_s = float(max_future_s)
        self.nonce_capacity = int(nonce_capacity)
        # nonce -> time after which it may be forgotten; heap of (forget_at, nonce).
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    @property
    def seen_nonces(self) -> int:
        return len(self._seen)

    def preload(self, entries: list[tuple[str, float]]) -> None:
        """Remember nonces accepted before a restart (``nonce_journal``), with the time
        after which each may be forgotten."""
        with self._lock:
            for nonce, forget_at in entries:
                if nonce not in self._seen:
                    self._seen[nonce] = forget_at
                    heapq.heappush(self._expiry, (forget_at, nonce))

    def verify(self, command: str, payload: bytes, now: float | None = None) -> VerifiedCommand:
        """A verified command, or ``CommandRefused`` (never any other exception)."""
        if not isinstance(command, str) or not _COMMAND_RE.match(command):
            raise CommandRefused("malformed", "bad command name in topic")
        obj = _parse(payload)
        unknown = set(obj) - _FIELDS
        if unknown:
            raise CommandRefused("malformed", f"unknown field(s): {', '.join(sorted(unknown))}")
        args = obj.get("args", {})
        if not isinstance(args, dict):
            raise CommandRefused("malformed", "args must be a JSON object")
        if "cmd" in obj and obj["cmd"] != command:
            # For signed payloads the topic name is also bound by the MAC; this field
            # check makes the mismatch explicit for unsigned ones too.
            raise CommandRefused("malformed", "cmd field does not match the topic")
        request_id = obj.get("request_id")
        if request_id is not None and not (isinstance(request_id, str) and len(request_id) <= 128):
            raise CommandRefused("malformed", "request_id must be a string of <= 128 chars")

        if "sig" not in obj:
            if not self.allow_unsigned:
                raise CommandRefused("unsigned", "command carries no signature")
            return VerifiedCommand(command=command, args=args, signed=False, request_id=request_id)

        sig, ts, nonce = obj["sig"], obj.get("ts"), obj.get("nonce")
        if obj.get("v") != WIRE_VERSION or isinstance(obj.get("v"), bool):
            raise CommandRefused("malformed", f"v must be {WIRE_VERSION}")
        if "cmd" not in obj:
            raise CommandRefused("malformed", "cmd is required")
        if not isinstance(sig, str) or not _SIG_RE.match(sig):
            raise CommandRefused("malformed", "sig must be 64 lowercase hex digits")
        try:
            ts_ok = not isinstance(ts, bool) and isinstance(ts, (int, float)) and math.isfinite(ts)
        except OverflowError:  # an int too large for a float
            ts_ok = False
        if not ts_ok:
            raise CommandRefused("malformed", "ts must be a finite number")
        if not isinstance(nonce, str) or not _NONCE_RE.match(nonce):
            raise CommandRefused("malformed", "nonce must be 16-128 chars of [A-Za-z0-9_-]")
        if self._key is None:
            raise CommandRefused("no_key", "no command key is configured")

        unsigned_part = {k: v for k, v in obj.items() if k != "sig"}
        try:
            expected = _mac(self._key, command, unsigned_part)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise CommandRefused("malformed", f"cannot canonicalise: {exc}") from None
        if not hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii")):
            raise CommandRefused("bad_signature", "signature does not match")

        now = time.time() if now is None else now
        ts = float(ts)
        if now - ts > self.max_age_s:
            raise CommandRefused("expired", f"sent {now - ts:.1f}s ago (max {self.max_age_s:g}s)")
        if ts - now > self.max_future_s:
            raise CommandRefused("from_future", f"sent {ts - now:.1f}s in the future")
        self._remember(nonce, ts, now)
        return VerifiedCommand(
            command=command, args=args, signed=True, ts=ts, nonce=nonce, request_id=request_id
        )

    def _remember(self, nonce: str, ts: float, now: float) -> None:
        # A nonce only needs remembering while a payload carrying it could still pass the
        # timestamp check, i.e. until now > ts + max_age_s: after that any replay of it is
        # refused as "expired" before the nonce is even looked at. So each entry expires
        # at ts + max_age_s and the set holds only the nonces of the last max_age_s
        # (+ the future skew) seconds. If that is more than nonce_capacity commands we
        # refuse new ones (fail closed) rather than forget a live nonce, which would
        # re-open a replay window. Only correctly signed commands get this far, so an
        # outsider cannot fill the set.
        forget_at = ts + self.max_age_s
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                old_at, old = heapq.heappop(self._expiry)
                if self._seen.get(old) == old_at:
                    del self._seen[old]
            if nonce in self._seen:
                raise CommandRefused("replayed_nonce", "nonce was already used")
            if len(self._seen) >= self.nonce_capacity:
                raise CommandRefused(
                    "replay_cache_full",
                    f"more than {self.nonce_capacity} commands within {self.max_age_s:g}s",
                )
            self._seen[nonce] = forget_at
            heapq.heappush(self._expiry, (forget_at, nonce))


# ---- CLI: edge-agent sign-command ----------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-file",
        required=True,
        help="file holding the command key (or credential:NAME for a systemd credential)",
    )
    parser.add_argument("--command", required=True, help="command name, e.g. fit")
    parser.add_argument(
        "args_json",
        nargs="?",
        default="{}",
        metavar="ARGS_JSON",
        help='command arguments as a JSON object, e.g. \'{"series": "m1/temp"}\'',
    )
    parser.add_argument("--request-id", default=None, help="request id (default: random)")


def run(args: argparse.Namespace) -> int:
    """Print the signed payload (one line) to stdout; 0 on success, 2 on bad input."""
    from edge_agent.config import ConfigError

    try:
        key = load_key(args.key_file)
    except ConfigError as exc:
        print(f"sign-command: {exc}", file=sys.stderr)
        return 2
    if not key:
        print(f"sign-command: key file {args.key_file} is empty", file=sys.stderr)
        return 2
    try:
        body = json.loads(args.args_json)
    except ValueError as exc:
        print(f"sign-command: ARGS_JSON is not valid JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(body, dict):
        print("sign-command: ARGS_JSON must be a JSON object", file=sys.stderr)
        return 2
    try:
        payload = sign(key, args.command, body, request_id=args.request_id)
    except (ValueError, TypeError) as exc:
        print(f"sign-command: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(payload.decode("ascii") + "\n")
    sys.stdout.flush()
    return 0
