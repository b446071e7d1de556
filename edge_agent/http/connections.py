"""Connections to the HTTP port: a cap, and read timeouts for headers and bodies.

uvicorn (0.54, h11) times out idle keep-alive connections but not a request that is never
finished: a client that sends half a header holds its socket, and with it a descriptor, for
ever. About 1,000 of them took every descriptor of an agent under systemd's default
``LimitNOFILE=1024``; the agent then could not open a socket to its restarted broker, and
asyncio logged ~14,000 "accept() out of system resource" tracebacks a second (issue 15,
finding 6: 48 MB of log in 25 s here, with a limit of 256). So, per connection:

- the request's headers must be complete within ``http.header_timeout_s`` of its first byte
  (or of the connection, for the first request), and its body within ``http.body_timeout_s``
  of the headers; otherwise the connection is closed and counted;
- at most ``http.max_connections`` are open at once, and never more than the process's
  descriptor limit minus ``FD_RESERVE`` (the broker link, SQLite files, worker pipes, S3)
  and minus ``ACCEPT_BURST``: beyond it a new connection gets ``503`` and is closed at once,
  so the HTTP port can never take the descriptors alarms need;
- the listen backlog is ``ACCEPT_BURST``: asyncio accepts up to *backlog* connections in one
  go before any of them reaches this code, so uvicorn's default of 2,048 alone could exhaust
  a limit of 1,024 (measured: with a cap but that backlog, accept still hit EMFILE).

Written as a small subclass of uvicorn's own ``H11Protocol`` (passed as ``http=`` to
``uvicorn.Config``) because uvicorn has no such settings; everything else is uvicorn's.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass, field
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from edge_agent.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

# Descriptors kept for everything but HTTP: broker socket, outbox/nonce/S3 SQLite files with
# their WAL and shm, worker pipes, the resource tracker, S3 sockets, logging. An agent with
# fit and plot workers running held 38 here (/proc/PID/fd); the reserve leaves room to spare.
FD_RESERVE = 128
ACCEPT_BURST = 64
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 15\r\nConnection: close\r\n\r\ntoo many conns\n"


@dataclass
class ConnectionGuard:
    """Limits and counters shared by every connection of one server."""

    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    refused: int = 0
    timed_out: dict[str, int] = field(default_factory=lambda: {"headers": 0, "body": 0})
    refusal_log: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log, 10.0))
    timeout_log: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log, 10.0))

    @classmethod
    def for_config(cls, max_connections: int, header_timeout_s: float, body_timeout_s: float) -> ConnectionGuard:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = max_connections
        room = soft - FD_RESERVE - ACCEPT_BURST
        if soft != resource.RLIM_INFINITY and room < cap:
            cap = max(4, room)
            log.warning(
                "HTTP: at most %d connections (http.max_connections is %d, but the descriptor limit is %d and %d are kept "
                "for the broker link, state files, workers and accepting; raise LimitNOFILE)", cap, max_connections, soft,
                FD_RESERVE + ACCEPT_BURST,
            )
        return cls(cap, header_timeout_s, body_timeout_s)

    def protocol(self) -> type[H11Protocol]:
        """The protocol class to hand to ``uvicorn.Config(http=...)``."""
        return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": self})


class GuardedH11Protocol(H11Protocol):
    guard: ConnectionGuard
    _refused = False
    _timer: asyncio.TimerHandle | None = None
    _phase: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        guard = self.guard
        if len(self.connections) >= guard.max_connections:
            self._refused = True
            guard.refused += 1
            guard.refusal_log.warning("HTTP: refused a connection, %d are open (the cap); %d refused so far", len(self.connections), guard.refused)
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._set_timer(None)
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Arm the timer that matches where the request is: reading headers, reading the body,
        or neither (being answered, or idle under uvicorn's keep-alive timer)."""
        state = self.conn.their_state
        if state is h11.IDLE and self.timeout_keep_alive_task is None:
            self._set_timer("headers")
        elif state is h11.SEND_BODY:
            self._set_timer("body")
        else:
            self._set_timer(None)

    def _set_timer(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = phase
        if phase is not None:
            delay = self.guard.header_timeout_s if phase == "headers" else self.guard.body_timeout_s
            self._timer = self.loop.call_later(delay, self._expired, phase)

    def _expired(self, phase: str) -> None:
        self._timer = None
        self._phase = None
        guard = self.guard
        guard.timed_out[phase] += 1
        guard.timeout_log.warning(
            "HTTP: closed a connection from %s whose request %s did not arrive in time; timed out so far: %s",
            _peer(self.client), phase, ", ".join(f"{k}={v}" for k, v in guard.timed_out.items()),
        )
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"
