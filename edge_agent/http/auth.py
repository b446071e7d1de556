"""Bearer-token guard for mutating endpoints. Secure by default: no token configured, no mutation."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edge_agent.config import ConfigError, HttpConfig, read_secret
from edge_agent.http.errors import ApiError

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="The token from the file named by http.token_file")


class TokenSource:
    """The expected token, read once at start; ``problem`` says why mutation is off when it is."""

    def __init__(self, cfg: HttpConfig) -> None:
        self.token: str | None = None
        self.problem: str | None = None
        try:
            self.token = read_secret(cfg.token_file) or None
        except ConfigError as exc:
            self.problem = f"http.token_file cannot be read ({exc.errors[0][1] if exc.errors else exc})"
            log.error("HTTP: %s; mutating endpoints are disabled", self.problem)
            return
        if self.token is None:
            self.problem = (
                "mutating endpoints are disabled: no API token is configured "
                "(set http.token_file to a file, or credential:NAME, holding the token)"
                if not cfg.token_file
                else "http.token_file is empty; mutating endpoints are disabled"
            )


def require_token(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    source: TokenSource = request.app.state.tokens
    if source.token is None:
        raise ApiError(403, "forbidden", source.problem)
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(creds.credentials.encode("utf-8", "surrogateescape"), source.token.encode("utf-8", "surrogateescape")):
        raise ApiError(403, "forbidden", "invalid token")
