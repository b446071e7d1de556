"""Talking to S3 with boto3: credentials from a file, a client that fails fast, error kinds.

Shared by the model sync (``s3_sync.py``) and preflight; nothing here knows the remote layout
(``s3_slots.py``).
"""

from __future__ import annotations

import configparser
import random
from collections.abc import Callable
from typing import Any

from edge_agent.config import ConfigError, S3Config, read_secret


def load_credentials_file(ref: str) -> dict[str, str]:
    """Keys from an AWS shared-credentials-format file (path or ``credential:NAME``).

    Uses the ``[default]`` profile, or the only profile if there is just one.
    """
    text = read_secret(ref) or ""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=ref)
    except configparser.Error as exc:
        raise ConfigError(ref, [("s3.credentials_file", f"not an AWS credentials file: {exc}")]) from None
    sections = parser.sections()
    name = "default" if "default" in sections else (sections[0] if len(sections) == 1 else None)
    if name is None:
        raise ConfigError(ref, [("s3.credentials_file", "needs a [default] profile")])
    sec = parser[name]
    key_id, secret = sec.get("aws_access_key_id"), sec.get("aws_secret_access_key")
    if not key_id or not secret:
        raise ConfigError(
            ref, [("s3.credentials_file", f"[{name}] needs aws_access_key_id and aws_secret_access_key")]
        )
    out = {"aws_access_key_id": key_id.strip(), "aws_secret_access_key": secret.strip()}
    if sec.get("aws_session_token"):
        out["aws_session_token"] = sec["aws_session_token"].strip()
    return out


def make_client(s3: S3Config) -> Any:
    """A boto3 S3 client that fails fast: short timeouts, two attempts."""
    import boto3
    from botocore.config import Config

    creds = load_credentials_file(s3.credentials_file) if s3.credentials_file else {}
    session = boto3.session.Session(region_name=s3.region, **creds)
    opts: dict[str, Any] = {
        "connect_timeout": s3.timeout_s,
        "read_timeout": s3.timeout_s,
        "retries": {"max_attempts": 2, "mode": "standard"},
        "tcp_keepalive": True,
    }
    if s3.endpoint_url:
        opts["s3"] = {"addressing_style": "path"}
    try:
        # Only send/require checksums the API demands: many S3-compatible stores reject
        # the newer default CRC trailers. Integrity is checked end to end by the manifest.
        config = Config(
            **opts,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
    except TypeError:  # botocore older than 1.36 has neither option nor the new default
        config = Config(**opts)
    return session.client("s3", endpoint_url=s3.endpoint_url or None, config=config)


def error_code(exc: Exception) -> tuple[str, int]:
    resp = getattr(exc, "response", None) or {}
    code = str(resp.get("Error", {}).get("Code", ""))
    status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def is_no_such_key(exc: Exception) -> bool:
    code, _ = error_code(exc)
    return code in ("NoSuchKey", "404", "NotFound")


def is_precondition_failed(exc: Exception) -> bool:
    code, status = error_code(exc)
    return status == 412 or code == "PreconditionFailed"


def looks_transient(exc: Exception) -> bool:
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (BotoCoreError, ClientError, ConnectionError, TimeoutError))


def backoff_delay(failures: int, initial_s: float, max_s: float, rng: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with equal jitter: in [base/2, base], base = initial * 2^(n-1)."""
    base = min(max_s, initial_s * (2 ** min(max(failures - 1, 0), 60)))
    return base / 2 + rng() * base / 2
