"""Readings per second from counter deltas: a small ring of (time, counter) samples taken once a
second on the loop, so the rate is a true recent rate and reading it costs nothing."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class RateMeter:
    def __init__(self, read: Callable[[], int], window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.read = read
        self.window_s = window_s
        self.clock = clock
        self.samples: deque[tuple[float, int]] = deque()

    def sample(self) -> None:
        now = self.clock()
        self.samples.append((now, self.read()))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()

    def rate(self) -> float:
        """Per second over the last window (up to ``window_s``); 0.0 until two samples exist."""
        if not self.samples:
            return 0.0
        t0, c0 = self.samples[0]
        t1, c1 = self.clock(), self.read()
        dt = t1 - t0
        return max(0.0, (c1 - c0) / dt) if dt > 0.05 else 0.0

    async def run(self, interval_s: float = 1.0) -> None:
        while True:
            self.sample()
            await asyncio.sleep(interval_s)
