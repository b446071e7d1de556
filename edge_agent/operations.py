"""Operations an operator or a remote system asks of the running agent, shared by the signed
commands (``commands.py``) and the HTTP endpoints (``http/``): each checks its arguments in
one place and answers plain data, so the two front ends say the same thing in the same words.

Models: ``fit`` (off the loop, then active), ``rollback``, ``rebaseline``, ``sync`` (S3).
Machines (issue 14): ``fit``, ``rollback``, ``status`` and ``rebaseline`` of a *machine* go
through ``MACHINE_DISPATCH`` to ``machines/operations.py``. A request names a machine with its
own argument (``machine``), never inside ``series``: a series ``line1/p1`` and a machine
``line1/p1`` can both exist, and neither front end guesses which one is meant.

Operators' alarm actions (``annunciator.py`` keeps the state):

- ``ack``: acknowledge the unacknowledged alarms of a series (all of them, those of one
  ``condition`` -- ``model`` or a limit ``hihi``/``hi``/``lo``/``lolo`` -- or one ``alert_id``).
- ``shelve``: hold back a series' new alarms for ``duration_s`` (at most
  ``alarms.max_shelve_s``) with a ``reason``; it is still scored, its would-be alarms counted.
- ``unshelve``: end a shelve now; alarms raised under it and still active are published then.

Each names a series (``series``) or a machine (``machine``): a machine's alarm is one more
condition (``model``) in the same annunciator, with the same lifecycle.

The front ends pass the narrow ``Operator`` below, never the agent: neither imports it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from concurrent.futures import Executor
from typing import Any, Protocol

from edge_agent.alarm_conditions import describe, owner_key
from edge_agent.annunciator import Annunciator
from edge_agent.limits import NAMES as LIMIT_NAMES
from edge_agent.model_store import Model, ModelStore
from edge_agent.pipeline import Pipeline

log = logging.getLogger(__name__)

CONDITIONS = ("model", *LIMIT_NAMES)
MAX_REASON = 500
MAX_BY = 100


class OperationError(ValueError):
    """Arguments an operation cannot act on; the message says which and why."""


class NothingToDo(OperationError):
    """Valid arguments, but nothing in that state: no unacknowledged alarm, no shelve."""


class Operator(Protocol):
    """What the operations need of the running agent (``agent.Agent`` is one): the front ends
    hold this, never the agent's class."""

    annunciator: Annunciator
    cfg: Any
    pipeline: Pipeline | None
    store: ModelStore
    loop: asyncio.AbstractEventLoop | None
    executor: Executor
    s3: Any
    machines: Any  # machines.live.LiveMachines, or None when no subscription names a machine

    async def after_sync(self, report: Any) -> None: ...

    def health(self) -> dict[str, Any]: ...


class NoMachines(OperationError):
    """A machine was named but no subscription feeds machines (``subscriptions[].machine``)."""


def _live_machines(agent: Operator) -> Any:
    live = getattr(agent, "machines", None)
    if live is None:
        raise NoMachines("this agent has no machines (no subscription sets subscriptions[].machine)")
    return live


def machine_id(value: Any) -> str:
    """A machine id as a request gives it: a non-empty string of at most 1024 characters."""
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise OperationError("machine must be a machine id (1 to 1024 characters)")
    return value


async def fit_machine(agent: Operator, machine: str, detector: str | None = None, params: dict[str, Any] | None = None,
                      last_n: int | None = None) -> dict[str, Any]:
    """Refit a machine on the complete rows it holds (its last ``last_n``) in the fit worker,
    wait for the new version to be active, and return it."""
    from edge_agent.machines import operations as machine_ops

    live, loop = _live_machines(agent), agent.loop
    assert loop is not None
    fut: asyncio.Future[Model] = loop.create_future()

    def done(model: Model | None, exc: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(exc) if exc is not None else fut.set_result(model)  # type: ignore[arg-type]

    asked = machine_ops.fit_machine(live.set, machine, detector=detector, params=params, last_n=last_n, done=done)
    model = await fut
    return {"machine": machine, "version": model.version, "detector": model.detector.name, "rows": asked["rows"],
            "train_ms": round(1000 * float(model.meta.get("train_seconds", 0.0) or 0.0), 3)}


async def rollback_machine(agent: Operator, machine: str, version: int | None = None) -> dict[str, Any]:
    """Activate an older stored version of a machine's model (default: the one before the
    active one): read off the loop, put to use on it."""
    from edge_agent.machines import operations as machine_ops

    live, loop = _live_machines(agent), agent.loop
    assert loop is not None
    if machine not in live.set.machines:
        raise machine_ops.UnknownMachine(machine)
    model = await loop.run_in_executor(agent.executor, machine_ops.rollback_in_store, live.store, machine, version)
    out = machine_ops.activate(live.set, machine, model)
    log.info("machine %r: rolled back to v%d", machine, model.version)
    return out


def _alarm_view(agent: Operator, machine: str) -> dict[str, Any]:
    """What the operators did about a machine's alarm (annunciator.py): its condition's state
    (``active_unacked``, ``active_acked``, ``cleared_unacked``, or None) and its shelve."""
    key = owner_key(machine=machine)
    cond = agent.annunciator.conditions.get(key, {}).get("model")
    return {"alarm_state": cond.state if cond is not None else None, "shelved": key in agent.annunciator.shelves}


async def status_machine(agent: Operator, machine: str) -> dict[str, Any]:
    from edge_agent.machines import operations as machine_ops

    out = machine_ops.machine_status(_live_machines(agent).set, machine)
    shelf = agent.annunciator.shelves.get(owner_key(machine=machine))
    return {**out, **_alarm_view(agent, machine), "shelve": shelf.view() if shelf is not None else None}


async def rebaseline_machine(agent: Operator, machine: str, by: str = "the rebaseline command") -> dict[str, Any]:
    from edge_agent.machines import operations as machine_ops

    result = machine_ops.rebaseline_machine(_live_machines(agent).set, machine, by=by)
    log.info("machine %r: rebaselined by %s", machine, by)
    return result


MACHINES_PER_PASS = 50  # machines summarised per event-loop pass (~2.5 ms of 5-sensor machines)


async def list_machines(agent: Operator) -> list[dict[str, Any]]:
    """Every machine, sorted by id, with its state, last score and the sensors that explain it
    ([] without machines). A slice per loop pass: 1,000 machines of 5 sensors in one go held
    the loop for 49 ms (status includes each sensor's contribution)."""
    from edge_agent.machines import operations as machine_ops

    live = getattr(agent, "machines", None)
    if live is None:
        return []
    out = []
    for i, mid in enumerate(sorted(live.set.machines)):
        if i and not i % MACHINES_PER_PASS:
            await asyncio.sleep(0)
        if mid in live.set.machines:  # not evicted meanwhile
            out.append({**machine_ops.machine_line(live.set, mid), **_alarm_view(agent, mid)})
    return out


# What a command or request naming a machine (``machine``, not ``series``) runs.
MACHINE_DISPATCH: dict[str, Any] = {
    "fit": fit_machine,
    "rollback": rollback_machine,
    "status": status_machine,
    "rebaseline": rebaseline_machine,
}


async def fit(
    agent: Operator,
    series_id: str,
    values: Any = None,
    detector: str | None = None,
    params: dict[str, Any] | None = None,
    last_n: int | None = None,
    reason: str = "command",
) -> Model:
    """Fit a new version for one series (off the loop), activate it, and return it.

    Training data: ``values`` if given, else the last ``last_n`` readings of the ring buffer.
    Detector and params default to the series' own (its rules), else the configured ones.
    Raises ValueError for an unknown series / too little data / a disabled series, TypeError
    for bad params.
    """
    import numpy as np

    from edge_agent import detectors
    from edge_agent.fit_bounds import check_fit_params

    pipe, loop = agent.pipeline, agent.loop
    assert pipe is not None and loop is not None
    s = pipe.series.get(series_id)
    settings = s.settings if s is not None else pipe.settings.for_series(series_id)
    if not settings.enabled:
        raise ValueError(f"series {series_id!r} is disabled by its rules (enabled: false)")
    name = detector or settings.detector
    if params is None and name == settings.detector:
        params = dict(settings.params)
    detectors.create(name, params if params is not None else {})  # fail fast on bad params
    check_fit_params(name, params)  # what a fit may cost (the command and POST /fit come here)
    if values is None:
        if s is None or s.count < 2:
            raise ValueError(f"series {series_id!r} has no readings to train on")
        values = s.recent_values(last_n)
    values = np.asarray(values, dtype=np.float64)
    limit = agent.cfg.ingest.max_abs_value
    if values.ndim != 1 or values.shape[0] < 2 or not (np.abs(values) <= limit).all():
        raise ValueError(f"training values must be at least 2 finite numbers within +-ingest.max_abs_value ({limit:g})")
    if s is None:
        s = pipe.get_or_create(series_id)
    fut: asyncio.Future[Model] = loop.create_future()

    def done(model: Model | None, exc: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(exc) if exc is not None else fut.set_result(model)  # type: ignore[arg-type]

    pipe.request_fit(s, reason=reason, values=values, detector=name, params=params, done=done)
    return await fut


async def rollback(agent: Operator, series_id: str, version: int | None = None) -> Model:
    """Activate an older stored version (default: the one before the active one)."""
    pipe, loop = agent.pipeline, agent.loop
    assert pipe is not None and loop is not None
    model = await loop.run_in_executor(agent.executor, agent.store.rollback, series_id, version)
    pipe.activate(pipe.get_or_create(series_id), model)
    log.info("series %r: rolled back to v%d", series_id, model.version)
    return model


def rebaseline(agent: Operator, series_id: str, by: str = "the rebaseline command") -> dict[str, Any]:
    """Accept a series' current behaviour as its new normal now. A raised alarm ends with an
    ``accepted`` message. Raises ValueError for a series without a model."""
    assert agent.pipeline is not None
    result = agent.pipeline.rebaseline(series_id, by=by)
    log.info("series %r: rebaselined (%s)%s", series_id, result["method"], "; its alarm is accepted" if result["was_in_alarm"] else "")
    return result


async def status(agent: Operator, series: list[str], offset: int = 0, limit: int = 1000, machines: bool = False) -> dict[str, Any]:
    """A page of ``series`` (ids, sorted) with state, model, last reading, counts, priority
    and shelve; the total, ``truncated`` and ``next_offset``; the agent's health. With
    ``machines`` (and an agent that has machines), every machine too, as ``list_machines``
    gives them (state, last score, the sensors that explain it, alarm and shelve)."""
    pipe = agent.pipeline
    shelves = agent.annunciator.shelves
    out = []
    page = series[offset:offset + limit]
    for i, sid in enumerate(page):
        if i and not i % 200:
            await asyncio.sleep(0)  # a page of 1,000 entries is a few ms: let readings in
        s = pipe.series.get(sid) if pipe else None
        if s is None:
            out.append({"series": sid, "state": "unknown"})
            continue
        out.append(
            {
                "series": sid,
                "state": s.state,
                "model": None if s.model is None else {"detector": s.model.detector.name, "version": s.model.version},
                "last_value": s.last_value if s.n_readings else None,
                "last_ts": s.last_ts if s.n_readings else None,
                "readings": s.n_readings,
                "scored": s.n_scored,
                "alarms": s.n_alarms,
                "priority": int(s.settings.priority),
                "shelved": sid in shelves,
            }
        )
    more = offset + len(page) < len(series)
    doc: dict[str, Any] = {"series": out, "total": len(series), "offset": offset, "truncated": more, "health": agent.health()}
    if more:
        doc["next_offset"] = offset + len(page)
    if machines and getattr(agent, "machines", None) is not None:
        doc["machines"] = await list_machines(agent)
    return doc


class NotEnabled(OperationError):
    """The part an operation needs is not configured (S3 sync)."""


async def sync(agent: Operator) -> Any:
    """An S3 sync now; the models it pulled are put to use. Returns the sync report."""
    if agent.s3 is None:
        raise NotEnabled("S3 sync is not enabled (s3.enabled is false)")
    report = await asyncio.to_thread(agent.s3.sync_once)
    await agent.after_sync(report)
    return report


def _series(series: Any) -> str:
    if not isinstance(series, str) or not series or len(series) > 1024:
        raise OperationError("series must be a series id (1 to 1024 characters)")
    return series


def _owner(series: Any, machine: Any) -> tuple[str, dict[str, str]]:
    """The annunciator's key of the series or the machine a request names (exactly one), and
    how an answer names it (``{"series": id}`` or ``{"machine": id}``)."""
    if machine is None:
        sid = _series(series)
        return owner_key(series=sid), {"series": sid}
    if series is not None:
        raise OperationError("give series or machine, not both")
    mid = machine_id(machine)
    return owner_key(machine=mid), {"machine": mid}


def _text(name: str, value: Any, limit: int, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise OperationError(f"{name} must be a{' non-empty' if required else ''} string")
    if len(value) > limit:
        raise OperationError(f"{name} is longer than {limit} characters")
    return value.strip()


def ack(agent: Operator, series: Any, condition: Any = None, alert_id: Any = None, by: str = "", note: Any = None,
        machine: Any = None) -> dict[str, Any]:
    key, named = _owner(series, machine)
    conditions = ("model",) if machine is not None else CONDITIONS
    if condition is not None and condition not in conditions:
        raise OperationError(f"condition must be one of {', '.join(conditions)}")
    if alert_id is not None and (not isinstance(alert_id, str) or len(alert_id) > 64):
        raise OperationError("alert_id must be a string (an alarm's alert_id)")
    acked = agent.annunciator.ack(key, condition, alert_id, by=by, note=_text("note", note, MAX_REASON))
    if not acked:
        which = f" of condition {condition!r}" if condition else f" with alert_id {alert_id!r}" if alert_id else ""
        raise NothingToDo(f"{describe(key)} has no unacknowledged alarm{which}")
    return {**named, "acknowledged": acked}


def shelve(agent: Operator, series: Any, duration_s: Any, reason: Any, by: str = "", machine: Any = None) -> dict[str, Any]:
    """Shelve a series, or a machine this agent has (``UnknownMachine`` otherwise: a typo must
    not leave a shelve that holds nothing back)."""
    key, named = _owner(series, machine)
    if machine is not None:
        from edge_agent.machines.operations import UnknownMachine

        if named["machine"] not in _live_machines(agent).set.machines:
            raise UnknownMachine(named["machine"])
    longest = float(agent.cfg.alarms.max_shelve_s)
    if isinstance(duration_s, bool) or not isinstance(duration_s, int | float) or not math.isfinite(duration_s) \
            or not 0 < duration_s <= longest:
        raise OperationError(f"duration_s must be a number of seconds in (0, {longest:g}] (alarms.max_shelve_s)")
    why = _text("reason", reason, MAX_REASON, required=True)
    return {**named, "shelved": agent.annunciator.shelve(key, float(duration_s), why, by)}


def unshelve(agent: Operator, series: Any, by: str = "", machine: Any = None) -> dict[str, Any]:
    key, named = _owner(series, machine)
    ended = agent.annunciator.unshelve(key, by)
    if ended is None:
        raise NothingToDo(f"{describe(key)} is not shelved")
    return {**named, "unshelved": ended}


def alarms(agent: Operator, offset: int = 0, limit: int = 1000) -> dict[str, Any]:
    """The alarm list an operator sees (active first, by priority), shelves and the rate."""
    ann = agent.annunciator
    rows = ann.listing()
    return {
        "total": len(rows),
        "offset": offset,
        "alarms": [c.view() for c in rows[offset:offset + limit]],
        "shelved": [s.view() for s in ann.shelves.values()],
        "rate_10min": ann.rate.count(),
        "flood": ann.flood(),
        "flood_per_10min": ann.flood_at,
        "suppressed_10min": ann.suppressed_rate.count(),
    }


def who(front: str, by: Any) -> str:
    """``by`` as recorded: the operator's name a request gave, and the front end it came by."""
    name = _text("by", by, MAX_BY) if by is not None else ""
    return f"{name} ({front})" if name else front
