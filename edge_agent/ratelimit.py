"""Rate limits for what an outsider can trigger: log lines, answers, attempts.

Whatever a stranger can trigger by sending something (an unsigned command, a wrong HTTP
token, a flood of connections) must not turn into one log line per attempt: 100,000
unsigned commands were 100,000 WARNING lines, a 65 KB command name a 65 KB line each
(issue 15, finding 7). ``RateLimitedLog`` writes the first event of each interval and
folds the rest into a count carried by the next line; every event is still counted by its
caller for ``/metrics``. ``clip`` bounds anything outside-controlled that goes into a line.
``TokenBucket`` bounds work done *for* an outsider (answers to refused commands).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

MAX_FIELD = 200  # characters of an outside-controlled value that reach a log line


def clip(text: object, limit: int = MAX_FIELD) -> str:
    """``repr``-safe, bounded text: long values keep their head and say how long they were."""
    s = text if isinstance(text, str) else repr(text)
    if len(s) <= limit:
        return s
    return f"{s[:limit]}...({len(s)} chars)"


class RateLimitedLog:
    """At most one line per ``interval_s``; the lines in between are counted and reported."""

    def __init__(self, logger: logging.Logger, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self.suppressed = 0
        self._last: float | None = None

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Log now if the interval has passed (True), else count it (False)."""
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            self.suppressed += 1
            return False
        if self.suppressed:
            msg += " (and %d more like it since the last such line)"
            args = (*args, self.suppressed)
        self.logger.log(level, msg, *args)
        self._last = now
        self.suppressed = 0
        return True

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, msg, *args)


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``take()`` spends one if there is one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimitFilter(logging.Filter):
    """A logging filter that lets each kind of message (its first line) through at most once
    per ``interval_s``, and says how many of that kind it held back.

    For loggers outside our code that an outsider can make talk: asyncio's
    "socket.accept() out of system resource" traceback (thousands a second at a descriptor
    limit), uvicorn's "Invalid HTTP request received." per bad request.
    """

    def __init__(self, interval_s: float, max_kinds: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.max_kinds = max_kinds
        self.clock = clock
        self._kinds: dict[str, list[float | int]] = {}  # kind -> [last emitted, suppressed since]

    def filter(self, record: logging.LogRecord) -> bool:
        kind = f"{record.name}:{str(record.msg).split(chr(10), 1)[0][:200]}"
        now = self.clock()
        entry = self._kinds.get(kind)
        if entry is not None and now - entry[0] < self.interval_s:
            entry[1] += 1
            return False
        if entry is None and len(self._kinds) >= self.max_kinds:
            self._kinds.clear()
        suppressed = int(entry[1]) if entry is not None else 0
        self._kinds[kind] = [now, 0]
        if suppressed:
            record.msg = f"{record.msg} [{suppressed} more like this in the last {self.interval_s:g} s, not logged]"
        return True
