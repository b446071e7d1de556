"""The agent's series models from the model store, loaded off the event loop.

At start every stored series' active model (a bad file costs that model, reported in the
log, health, ``/metrics`` and ``models list``, never the start); after an S3 sync the models
it pulled and activated; and, when readings of a series evicted with its model come back, that
model (``Pipeline._restore`` asks, ``Pipeline.restored`` takes it on the loop thread).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from edge_agent import series_live
from edge_agent.model_store import Model
from edge_agent.pipeline import TooManySeries, with_live_state
from edge_agent.series import Series

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger("edge_agent.agent")  # split out of agent.py: its log lines keep their logger


async def after_sync(agent: Agent, report: Any) -> None:
    """Adopt models a sync pulled and activated: the store changed under the running series."""
    if not getattr(report, "pulled", 0) or agent.pipeline is None or agent.loop is None:
        return

    def changed() -> list[tuple[str, Model]]:
        out = []
        for sid in agent.store.list_series():
            active = agent.store.active_version(sid)
            s = agent.pipeline.series.get(sid) if agent.pipeline else None
            current = s.model.version if s is not None and s.model is not None else None
            if active is not None and active != current:
                try:
                    model, errors = agent.store.load_active(sid)
                except Exception as exc:
                    model, errors = None, [f"{sid!r}: cannot load ({exc!r})"]
                agent.model_errors.extend(errors)
                if model is not None:
                    out.append((sid, model))
        return out

    for sid, model in await agent.loop.run_in_executor(agent.executor, changed):
        try:
            s = agent.pipeline.get_or_create(sid)
        except TooManySeries:  # no room now: the model loads when the series' readings come
            agent.pipeline.evicted_models.add(sid)
            continue
        try:
            agent.pipeline.activate(s, model)
        except ValueError as exc:  # disabled by its rules
            log.warning("series %r: model v%d pulled from S3 not used: %s", sid, model.version, exc)
            continue
        log.info("series %r: model v%d (%s) pulled from S3 is active", sid, model.version, model.detector.name)


def load_models(agent: Agent) -> list[tuple[str, Model]]:
    """Every stored series' active model. A bad file costs its model (reported in the log,
    health, /metrics and ``models list``), never the start: the agent used to exit 1 on every
    start over one deeply nested meta.json."""
    agent.store.cleanup_temp()
    scan = agent.store.scan(repair=True)
    for problem in scan.problems:
        log.error("model store: %s", problem)
    agent.model_errors.extend(scan.problems)
    out = []
    for sid in scan.series:
        try:
            model, errors = agent.store.load_active(sid)
        except Exception as exc:  # a bug or an OS error on one series must not stop the rest
            model, errors = None, [f"{sid!r}: cannot load ({exc!r})"]
        for err in errors:
            log.error("model store: %s", err)
        agent.model_errors.extend(errors)
        if model is not None:
            if errors:
                active = agent.store.active_version(sid)
                older = "older " if active is not None and model.version < active else ""
                log.warning("series %r: serving %sversion v%d", sid, older, model.version)
            out.append((sid, model))
    return out


def restore_model(agent: Agent, s: Series, live: series_live.Entry | None = None) -> None:
    """An evicted series' readings are back: load its model off the loop (Pipeline._restore),
    with the live state it was evicted with when that is of the same model (checked off the
    loop too: ``from_state``; a state that does not fit costs the state, logged)."""
    assert agent.loop is not None and agent.pipeline is not None
    pipeline = agent.pipeline

    def load() -> tuple[Model | None, bool]:
        model, errors = agent.store.load_active(s.id)
        for err in errors:
            log.error("model store: %s", err)
        revived = with_live_state(s.id, model, live)
        return revived, revived is not model

    def done(fut: asyncio.Future[tuple[Model | None, bool]]) -> None:
        model, revived = None, False
        if not fut.cancelled():
            exc = fut.exception()
            if exc is not None:
                log.error("series %r: cannot reload its model: %r", s.id, exc)
            else:
                model, revived = fut.result()
        pipeline.restored(s, model)
        if model is not None:
            log.info("series %r: model v%d reloaded%s (the series had been evicted)", s.id, model.version,
                     " with its live state" if revived else "")

    agent.loop.run_in_executor(agent.executor, load).add_done_callback(done)
