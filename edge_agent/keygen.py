"""``edge-agent keygen``: the command HMAC key and the HTTP bearer token, written safely.

Both secrets are 32 random bytes as 64 hex characters (``secrets.token_hex``), the form
``commands.key_file`` and ``http.token_file`` read (surrounding whitespace is stripped). Each
file is written to a temporary file created 0600 in the target directory, flushed to disk and
then linked into place, so a reader never sees a half-written or world-readable secret, and
an existing file is never replaced unless ``--force`` says so.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path


class Exists(Exception):
    pass


def write_secret(path: Path, text: str, force: bool) -> None:
    """Write ``text`` to ``path`` with mode 0600; ``Exists`` if it is there and not ``force``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path exists: no check-then-write race
            except FileExistsError:
                raise Exists(str(path)) from None
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=".", help="directory for both files (default: the current one)")
    parser.add_argument("--command-key", metavar="FILE", help="where the command HMAC key goes (default: DIR/cmd.key)")
    parser.add_argument("--http-token", metavar="FILE", help="where the HTTP bearer token goes (default: DIR/http.token)")
    parser.add_argument("--only", choices=["command-key", "http-token"], help="create only this one of the two")
    parser.add_argument("--force", action="store_true", help="replace files that already exist (the old secret stops working)")


def run(args: argparse.Namespace) -> int:
    base = Path(args.dir)
    wanted = []
    if args.only in (None, "command-key"):
        wanted.append(("command HMAC key", Path(args.command_key or base / "cmd.key"), "commands", "key_file"))
    if args.only in (None, "http-token"):
        wanted.append(("HTTP bearer token", Path(args.http_token or base / "http.token"), "http", "token_file"))
    for what, path, _, _ in wanted:
        if path.exists() and not args.force:
            print(f"keygen: {path} exists; not replacing it (--force replaces it, and the old {what} stops working)",
                  file=sys.stderr)
            return 1
    for what, path, _, _ in wanted:
        try:
            write_secret(path, secrets.token_hex(32), args.force)
        except Exists:
            print(f"keygen: {path} appeared meanwhile; not replacing it", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"keygen: cannot write {path}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"wrote {path.resolve()}  ({what}, 64 hex characters, mode 0600)")
    print("\nset in the agent's config (or as EDGE_AGENT__COMMANDS__KEY_FILE / EDGE_AGENT__HTTP__TOKEN_FILE):")
    for _, path, section, key in wanted:
        print(f"  {section}:\n    {key}: {path.resolve()}")
    if any(s == "commands" for _, _, s, _ in wanted):
        key_path = next(p for _, p, s, _ in wanted if s == "commands").resolve()
        print("\nsign a command with it (copy the key to the operator's machine over a safe channel):")
        print(f"  edge-agent sign-command --key-file {key_path} --command status '{{}}' \\")
        print("    | mosquitto_pub -h BROKER -t edge/GATEWAY_ID/cmd/status -q 1 -s")
    if any(s == "http" for _, _, s, _ in wanted):
        tok = next(p for _, p, s, _ in wanted if s == "http").resolve()
        print("\ncall a mutating endpoint with the token:")
        print(f"  curl -H \"Authorization: Bearer $(cat {tok})\" -X POST http://127.0.0.1:8000/rollback/m1/temp")
    print("\nwith systemd, prefer LoadCredential= and key_file: credential:NAME (docs/operations.md)")
    return 0
