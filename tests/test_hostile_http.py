"""Hostile-input campaign, attack class *HTTP*: the agent's own HTTP port under slow or idle
clients, large requests on the event loop, token guessing, and error bodies (issue 15,
findings 6 and 10). Each case: a real broker, a real agent process with its HTTP port, the
attack over real sockets, then the invariants (the agent scores and its alarm reaches SCADA).
"""

from __future__ import annotations

import socket
import time

import pytest
from helpers import wait_for


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (a 4xx/5xx before closing is fine), or None."""
    sock.settimeout(0.2)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - t0
    return None


@pytest.mark.timeout(60)
def test_unfinished_headers_and_bodies_are_timed_out(make_campaign) -> None:
    c = make_campaign(http=True, **{"http.header_timeout_s": 1.0, "http.body_timeout_s": 1.5})
    idle = socket.create_connection(("127.0.0.1", c.http_port))
    half = socket.create_connection(("127.0.0.1", c.http_port))
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
    slow = socket.create_connection(("127.0.0.1", c.http_port))
    slow.sendall(b"POST /predict/c0/probe HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"values\": [")
    # A keep-alive client that finished one request and then starts a second one it never ends.
    kept = socket.create_connection(("127.0.0.1", c.http_port))
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert b"200 OK" in kept.recv(4096)
    kept.sendall(b"GET /healthz HTTP/1.1\r\n")
    try:
        for sock, limit in ((idle, 3.0), (half, 3.0), (slow, 3.5), (kept, 3.0)):
            took = closed_within(sock, limit)
            assert took is not None, "the connection was left open"
    finally:
        for sock in (idle, half, slow, kept):
            sock.close()
    wait_for(lambda: c.get("/healthcheck")[1]["http"]["timed_out"] == {"headers": 3, "body": 1}, 5, "the timeouts counted")
    c.assert_invariants()
