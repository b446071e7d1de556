"""Which asyncio event loop runs the agent: uvloop when available, the standard one otherwise.

Every reading arrives as a socket event, so the loop's own cost per wake-up is the largest part
of the agent's cost per reading at plant rates: on the 2-core bench machine an idle wake-up
that hands one small packet to a protocol costs about 30 µs of CPU with the standard loop and
about 8 µs with uvloop (libuv). ``event_loop: asyncio`` keeps the standard loop, e.g. where
uvloop has no wheel for the platform and cannot be built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Choice = Literal["auto", "uvloop", "asyncio"]


class EventLoopUnavailable(RuntimeError):
    pass


def loop_factory(choice: Choice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``asyncio.Runner``; None means the standard loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise EventLoopUnavailable(f"event_loop: uvloop is configured but cannot be imported ({exc})") from None
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T], choice: Choice = "auto") -> T:
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(coro)


def name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``, for health and the status page."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
