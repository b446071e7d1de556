"""The HTTP port's app and server: uvicorn inside the agent's own event loop.

``app.run_agent`` starts ``serve(agent)`` as a task. uvicorn normally installs SIGINT/SIGTERM
handlers of its own; here the agent owns those signals (it must flush its outbox before it
exits), so ``capture_signals`` is a no-op and the server stops when its task is cancelled.
A port that cannot be bound is logged and the agent keeps running: alarms matter more than
the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from edge_agent import __version__
from edge_agent.http import (
    alarms_api,
    api,
    docs,
    errors,
    health,
    machines_api,
    metrics,
    page,
    plots,
)
from edge_agent.http.auth import AuthThrottle, TokenSource
from edge_agent.http.connections import ACCEPT_BURST, ConnectionGuard
from edge_agent.http.limits import BodyLimit
from edge_agent.http.rates import RateMeter
from edge_agent.http.series_index import SeriesIndex

if TYPE_CHECKING:  # the agent is composed in app.py; the HTTP layer never imports it at run time
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)


def create_app(agent: Agent) -> FastAPI:
    """The FastAPI app serving ``agent`` (whose ``start()`` has run)."""
    app = FastAPI(
        title="edge-agent",
        version=__version__,
        description="Health, metrics, series state, plots and the fit/predict API of one edge-agent gateway.",
        docs_url=None,  # served by http/docs.py from an installed package, not a CDN
        redoc_url=None,
    )
    app.state.agent = agent
    app.state.tokens = TokenSource(agent.cfg.http)
    app.state.auth_throttle = AuthThrottle(agent.cfg.http.auth_max_failures, agent.cfg.http.auth_window_s)
    app.state.series_index = SeriesIndex(agent)
    app.state.registry = metrics.build_registry(agent, app.state.series_index)
    app.state.registry.register(metrics.HttpCollector(app.state))
    app.state.plots = plots.PlotRenderer(agent.cfg.state_dir, agent.cfg.http.plot_concurrency)
    app.state.reading_rate = RateMeter(lambda: agent.ingest.readings if agent.ingest is not None else 0)
    cfg = agent.cfg.http
    app.state.connections = ConnectionGuard.for_config(cfg.max_connections, cfg.header_timeout_s, cfg.body_timeout_s)
    errors.install(app)
    app.add_middleware(BodyLimit)
    for module in (health, metrics, api, alarms_api, machines_api, plots, page):
        app.include_router(module.router)
    docs.install(app)
    return app


class AgentServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: SIGTERM belongs to the agent."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: FastAPI, host: str, port: int) -> AgentServer:
    guard: ConnectionGuard | None = getattr(app.state, "connections", None)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guard.protocol() if guard is not None else "h11",
        backlog=ACCEPT_BURST,
        log_level="warning",
        log_config=None,  # keep the agent's logging setup; uvicorn's loggers propagate to it
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=2,
        server_header=False,
    )
    return AgentServer(config)


async def serve(agent: Agent) -> None:
    cfg = agent.cfg.http
    app = create_app(agent)
    server = make_server(app, cfg.host, cfg.port)
    rate_task = asyncio.create_task(app.state.reading_rate.run(), name="http-rate")
    inner = asyncio.create_task(_run(server), name="http-server")
    try:
        await _announce(server, inner, cfg.host, cfg.port)
        await asyncio.shield(inner)
    except asyncio.CancelledError:
        # The agent is stopping: let uvicorn close its sockets and connections, briefly.
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(inner, timeout=3.0)
        raise
    finally:
        rate_task.cancel()
        app.state.plots.close()


async def _run(server: AgentServer) -> bool:
    """Serve until told to stop; False when the port could not be bound.

    uvicorn calls ``sys.exit`` when it cannot bind. A SystemExit leaving a task would stop the
    whole event loop, so it is caught here, inside the task.
    """
    try:
        await server.serve()
    except SystemExit:
        return False
    return True


async def _announce(server: AgentServer, inner: asyncio.Task[bool], host: str, port: int) -> None:
    while not server.started and not inner.done():
        await asyncio.sleep(0.02)
    if inner.done():
        if not inner.result():
            log.error("HTTP port disabled: cannot listen on %s:%d (see the error above); the agent runs on without it", host, port)
        return
    for srv in server.servers:
        for sock in srv.sockets or ():
            addr = sock.getsockname()
            log.info("HTTP port listening on http://%s:%d", host if ":" not in host else f"[{host}]", addr[1])
            return
