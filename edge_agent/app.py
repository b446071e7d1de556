"""The running agent, composed: the one place that creates the agent (``agent.py``), the
command handler (``commands.py``) and the HTTP port (``http/``) and runs them together.

Layers point one way: the command handler and the HTTP endpoints call ``operations.py`` with
the agent as its narrow ``Operator``; neither imports the agent at run time, and the agent
imports neither of them. This module imports all three.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from edge_agent import __version__, event_loop, series_budget
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.detectors import native as detectors_native

log = logging.getLogger("edge_agent.agent")  # the log lines operators and tests know


async def install_commands(agent: Agent) -> None:
    """The signed command topics, when ``commands.enabled``."""
    if agent.cfg.commands.enabled:
        from edge_agent.commands import CommandHandler

        agent.commands = CommandHandler(agent)
        await agent.commands.install()


async def _freeze_startup_heap(agent: Agent, settle_s: float = 2.0) -> None:
    """Move everything alive after start-up out of the cyclic collector's sight.

    Imports (numpy, FastAPI, boto3, ...) and the loaded models leave a few hundred thousand
    long-lived objects. Python's full (generation 2) collection walks all of them, and it
    runs on whichever thread allocates: measured in the side-load bench, the loop stalled
    for 30-150 ms per full collection while fits were being installed, the largest share
    of the reading-to-alarm p99. Frozen objects are still freed by reference counting;
    only cycles among them would be kept, and start-up objects live until exit anyway.
    """
    import gc

    await agent.link.connected.wait()
    await asyncio.sleep(settle_s)  # let lazy imports of the first requests settle too
    gc.collect()
    gc.freeze()
    log.debug("start-up heap frozen: %d objects no longer scanned by the cyclic collector", gc.get_freeze_count())


LOOP_PROBE_S = 0.05


async def _probe_loop_lag(agent: Agent) -> None:
    """How late the event loop runs a timer: every alarm waits as long as the loop is busy
    with something else (a large HTTP request, a plot, a listing of every series). Exported
    as ``edge_agent_event_loop_lag_seconds``; 20 probes a second cost nothing measurable."""
    from edge_agent.stats import LatencyRecorder

    loop = asyncio.get_running_loop()
    agent.loop_lag = LatencyRecorder()
    while True:
        t0 = loop.time()
        await asyncio.sleep(LOOP_PROBE_S)
        agent.loop_lag.observe(max(0.0, loop.time() - t0 - LOOP_PROBE_S))


async def run_agent(cfg: AgentConfig, extra_tasks: list[Any] | None = None, stop: asyncio.Event | None = None) -> int:
    # Worker threads (outbox writer, fits, S3) hand the GIL back to the event loop only every
    # switch interval; at the 5 ms default a commit or a fit adds up to 5 ms to an alarm's
    # latency. 0.5 ms keeps the loop responsive for a small cost in thread throughput.
    sys.setswitchinterval(0.0005)
    agent = Agent(cfg)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    _writable_parent(cfg.state_dir)
    log.info("edge-agent %s starting on the %s event loop; robust scores %s", __version__, event_loop.name(loop),
             detectors_native.STATUS)
    from edge_agent.notify import Notifier, watchdog_loop

    notifier = Notifier.from_env()
    await agent.start()
    await install_commands(agent)
    tasks = [asyncio.create_task(agent.link.run(), name="mqtt-link")]
    if notifier.enabled:

        async def tell_systemd() -> None:
            # READY=1 only once the agent does its job: connected, with its models loaded.
            await agent.link.connected.wait()
            notifier.ready(agent.status_line())
            await watchdog_loop(notifier, agent.status_line)

        tasks.append(asyncio.create_task(tell_systemd(), name="sd-notify"))
    if cfg.http.enabled:
        try:
            from edge_agent.http.server import serve
        except ImportError as exc:  # the HTTP port is optional at build time, never silently
            log.error("HTTP port disabled: %s", exc)
        else:
            tasks.append(asyncio.create_task(serve(agent), name="http"))
    if agent.s3 is not None:
        tasks.append(asyncio.create_task(agent.s3.run_forever(agent.s3_wake, on_report=agent.after_sync), name="s3-sync"))
    if agent.sparkplug is not None:
        tasks += agent.sparkplug.tasks()
    if agent.machines is not None:  # machines/live.py (issue 14)
        tasks += agent.machines.tasks()
    for factory in extra_tasks or []:
        tasks.append(asyncio.create_task(factory(agent)))
    tasks.append(asyncio.create_task(_freeze_startup_heap(agent), name="gc-freeze"))
    tasks.append(asyncio.create_task(_probe_loop_lag(agent), name="loop-lag"))
    tasks.append(asyncio.create_task(agent.expire_shelves(), name="shelve-expiry"))
    if agent.live_state is not None:
        tasks.append(asyncio.create_task(agent.live_state.run(), name="series-live-state"))
    tasks.append(asyncio.create_task(series_budget.upkeep(agent.pipeline, cfg.ingest.reject_log_interval_s), name="series-upkeep"))
    await stop.wait()
    notifier.stopping("shutting down: flushing the outbox")
    await agent.shutdown()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    log.info("stopped")
    return 0


def _writable_parent(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        return True
    except OSError as exc:
        log.error("state directory %s is not usable: %s", path, exc)
        return False
