"""Which asyncio event loop runs the agent: the standard one, or uvloop on request.

Both were measured on the 2-core bench machine (``make bench``), and neither wins everywhere:

- Every reading is a socket wake-up. uvloop's wake-up costs about a quarter of the standard
  loop's CPU (``bench/receive_path.py``: 10.5 µs vs 34 µs per arriving packet with the
  agent's framing), so at 10,000 readings/s the agent used 43–46 % of a core instead of
  54 %, and the reading → alarm p99 was 2.4–2.6 ms instead of 2.7–2.9 ms (3 runs each).
- Under saturation uvloop serves connections unfairly. With 100 HTTP clients flat out,
  ``POST /predict`` p99 was 0.3–1.2 s on uvloop against 24–68 ms on the standard loop (the
  same with a bare FastAPI app, so it is not the agent's code); and while the agent drained
  a 150,000-reading backlog at 100k readings/s, ``/metrics`` went unanswered until the end.

Health checks and scrapes that time out during a backlog drain are worse for a plant than
a few hundred µs of CPU per thousand readings, so the standard loop is the default;
``event_loop: uvloop`` is for gateways whose CPU is the limit at their reading rate.
uvloop ≥ 0.23 is required: earlier releases can close a reused file descriptor when
adopting a socket fails (uvloop issue #645, a response reaching the wrong HTTP client).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Choice = Literal["asyncio", "uvloop"]


class EventLoopUnavailable(RuntimeError):
    pass


def loop_factory(choice: Choice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``asyncio.Runner``; None means the standard loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        raise EventLoopUnavailable(
            f"event_loop: uvloop is configured but cannot be imported ({exc}); install edge-agent[uvloop] or use event_loop: asyncio"
        ) from None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T], choice: Choice = "asyncio") -> T:
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(coro)


def name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``, for health and the start-up log."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
