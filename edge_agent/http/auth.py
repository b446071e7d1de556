"""Bearer-token guard for mutating endpoints. Secure by default: no token configured, no mutation.

Wrong tokens are throttled per client address (``AuthThrottle``): token guessing ran at
~1,000 tries a second with nothing logged (issue 15, finding 10). After
``http.auth_max_failures`` wrong tokens within ``http.auth_window_s`` an address gets ``429``
with ``Retry-After``, its tokens unchecked, until the window has passed; failures are
counted in ``/metrics`` and logged at a rate limit. A request without any token (401) is not
a guess and is not counted. All loopback clients share one address: a local guesser locks
out local scripts too, for a minute at a time, which is the price of stopping it.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edge_agent.config import ConfigError, HttpConfig, read_secret
from edge_agent.http.errors import ApiError
from edge_agent.ratelimit import RateLimitedLog

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


class AuthThrottle:
    """Wrong tokens per client address within a sliding window; bounded in addresses kept."""

    def __init__(self, max_failures: int, window_s: float, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self.clock = clock
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.failed_total = 0
        self.throttled_total = 0
        self.log = RateLimitedLog(log, 10.0, clock)

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self.failures.get(client)
        if times is not None:
            while times and now - times[0] >= self.window_s:
                times.popleft()
            if not times:
                del self.failures[client]
                return None
        return times

    def retry_after(self, client: str) -> float | None:
        """Seconds this client must wait before its token is checked again, or None."""
        now = self.clock()
        times = self._recent(client, now)
        if times is None or len(times) < self.max_failures:
            return None
        self.throttled_total += 1
        return max(1.0, self.window_s - (now - times[0]))

    def failed(self, client: str) -> None:
        now = self.clock()
        times = self._recent(client, now)
        if times is None:
            times = self.failures[client] = deque(maxlen=self.max_failures)
            while len(self.failures) > self.max_clients:
                self.failures.popitem(last=False)
        times.append(now)
        self.failed_total += 1
        self.log.warning(
            "HTTP: wrong token from %s (%d in the last %g s; %d wrong, %d throttled since start)",
            client, len(times), self.window_s, self.failed_total, self.throttled_total,
        )


def require_token(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    source: TokenSource = request.app.state.tokens
    if source.token is None:
        raise ApiError(403, "forbidden", source.problem)
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
    throttle: AuthThrottle = request.app.state.auth_throttle
    client = request.client.host if request.client else "?"
    wait = throttle.retry_after(client)
    if wait is not None:
        raise ApiError(429, "too_many_attempts", f"too many wrong tokens from {client}; try again in {wait:.0f} s", {"Retry-After": str(int(wait + 0.999))})
    if not hmac.compare_digest(creds.credentials.encode("utf-8", "surrogateescape"), source.token.encode("utf-8", "surrogateescape")):
        throttle.failed(client)
        raise ApiError(403, "forbidden", "invalid token")
