"""systemd notify protocol (``sd_notify``), implemented directly on a unix datagram socket.

systemd starts a ``Type=notify`` service with ``$NOTIFY_SOCKET`` naming a unix datagram
socket: a filesystem path, or an abstract socket written with a leading ``@``. The service
sends newline-separated ``KEY=VALUE`` assignments to it:

``READY=1``     start-up finished (systemd waits for this before the unit is "active")
``STATUS=...``  one line shown by ``systemctl status``
``WATCHDOG=1``  keep-alive; with ``WatchdogSec=`` systemd kills and restarts the service
                when pings stop for longer than ``$WATCHDOG_USEC`` microseconds
``STOPPING=1``  shutdown has begun

Everything here is a no-op when ``$NOTIFY_SOCKET`` is unset (run by hand, in Docker, in
tests), and a failure to send is logged, never raised: notification must not take the
agent down.

Usage (the agent)::

    notifier = Notifier.from_env()
    ...start up...
    notifier.ready("connected to broker")
    task = asyncio.create_task(watchdog_loop(notifier, agent.status_line))
    ...
    notifier.stopping()

``watchdog_loop`` pings from the event loop itself, so a stalled loop (a blocking call, a
CPU-bound detector that never yields) stops the pings and systemd restarts the agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

#: How often STATUS is refreshed when NOTIFY_SOCKET is set but no watchdog is configured.
DEFAULT_STATUS_INTERVAL_S = 10.0
#: Longest STATUS line sent; ``systemctl status`` shows one line, keep it short.
MAX_STATUS_LEN = 200


def _parse_address(value: str | None) -> str | None:
    """``$NOTIFY_SOCKET`` to a socket address, or None if unset/unsupported."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    # e.g. "vsock:..." (systemd >= 253) is not supported: better silent than wrong.
    log.warning("NOTIFY_SOCKET=%r is not a path or abstract socket; systemd notifications disabled", value)
    return None


def _parse_watchdog(environ: Mapping[str, str]) -> float | None:
    """The watchdog timeout in seconds for *this* process, or None if no watchdog applies."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None  # the watchdog is meant for another process (e.g. our parent)
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer; watchdog disabled", usec)
        return None
    return value / 1_000_000 if value > 0 else None


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line[: MAX_STATUS_LEN - 3] + "..." if len(line) > MAX_STATUS_LEN else line


class Notifier:
    """Sends systemd notifications. Cheap, non-blocking, and never raises on send errors."""

    def __init__(self, address: str | None = None, watchdog_timeout_s: float | None = None) -> None:
        """``address``: a socket path or ``\\0``-prefixed abstract name (see ``from_env``)."""
        self.address = address
        self.watchdog_timeout_s = watchdog_timeout_s if address else None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build from ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        return cls(_parse_address(env.get("NOTIFY_SOCKET")), _parse_watchdog(env))

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog timeout (systemd's recommendation), or None."""
        return self.watchdog_timeout_s / 2 if self.watchdog_timeout_s else None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram. True if sent, False otherwise."""
        if self.address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", errors="replace")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(payload, self.address)
        except OSError as exc:
            # Log the first failure loudly, the rest at debug: a missing socket repeats forever.
            level = logging.DEBUG if self._warned else logging.WARNING
            log.log(level, "systemd notify to %r failed: %s", self.address.replace("\0", "@"), exc)
            self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished (``READY=1``), optionally with a STATUS line."""
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Keep-alive ping (``WATCHDOG=1``); only sent when a watchdog applies to this process."""
        if self.watchdog_timeout_s is None:
            return False
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun (``STOPPING=1``), optionally with a STATUS line."""
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def watchdog_loop(
    notifier: Notifier,
    status_fn: Callable[[], str] | None = None,
    *,
    status_interval_s: float = DEFAULT_STATUS_INTERVAL_S,
) -> None:
    """Ping the watchdog at half its timeout and refresh STATUS from ``status_fn()``.

    Runs until cancelled. It sleeps with ``asyncio.sleep`` and sends from the event loop's
    own thread, on purpose: if the loop stalls, pings stop and systemd restarts the agent.
    Without a watchdog (but with NOTIFY_SOCKET) it only refreshes STATUS every
    ``status_interval_s``; without NOTIFY_SOCKET it returns at once.
    ``status_fn`` must be cheap and non-blocking; if it raises, the ping is still sent.
    """
    if not notifier.enabled:
        return
    interval = notifier.watchdog_interval_s or status_interval_s
    failed_status = False
    while True:
        line: str | None = None
        if status_fn is not None:
            try:
                line = status_fn()
                failed_status = False
            except Exception:  # a broken summary must not stop the keep-alive
                if not failed_status:
                    log.exception("status_fn for systemd STATUS failed")
                failed_status = True
        if notifier.watchdog_timeout_s is not None:
            notifier.notify("WATCHDOG=1", *([f"STATUS={_one_line(line)}"] if line else []))
        elif line:
            notifier.status(line)
        await asyncio.sleep(interval)
