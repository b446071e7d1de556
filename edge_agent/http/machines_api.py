"""Machines on the HTTP port (issue 14): ``GET /machines``, ``GET /machines/{id}``, the
machine plot ``GET /machine_plot/{id}.png``, and, as series have ``/fit`` and ``/rollback``
(token required), ``POST /machine_fit/{id}`` and ``POST /machine_rollback/{id}``. A machine's
alarm is acknowledged and shelved at ``/machine_ack``, ``/machine_shelve``, ``/machine_unshelve``
(``alarms_api.py``).

Machine ids contain ``/`` (``{line}/{machine}``): the routes take them as a ``:path`` like the
series routes. The plot has its own prefix, not ``/plot/machine/...``: that path is also the
plot of a series named ``machine/...``, and a series and a machine may share an id.

Everything reads through ``operations`` (the same functions the signed commands use) on the
loop, where the machines are fed; the drawing runs in the plot worker processes
(``machine_render.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from edge_agent import operations
from edge_agent.http.auth import require_token
from edge_agent.http.errors import ApiError, responses
from edge_agent.http.machine_render import render_machine_png
from edge_agent.model_store import ModelLoadError

if TYPE_CHECKING:  # the agent is composed in app.py; the HTTP layer never imports it at run time
    from edge_agent.agent import Agent
    from edge_agent.http.plots import PlotRenderer

router = APIRouter(tags=["machines"])


def _agent(request: Request) -> Agent:
    return request.app.state.agent


def _unknown(machine_id: str) -> ApiError:
    return ApiError(404, "unknown_machine", f"no machine {machine_id[:200]!r}")


@router.get("/machines", summary="All machines: state, model, last score and the sensors that explain it", responses=responses(422))
async def list_machines(request: Request) -> dict[str, Any]:
    rows = await operations.list_machines(_agent(request))
    return {"total": len(rows), "machines": rows}


@router.get("/machines/{machine_id:path}", summary="One machine: state, model, sensors and their contributions", responses=responses(404, 422))
async def get_machine(request: Request, machine_id: str) -> dict[str, Any]:
    from edge_agent.machines.operations import UnknownMachine

    try:
        return await operations.status_machine(_agent(request), machine_id)
    except (UnknownMachine, operations.NoMachines):
        raise _unknown(machine_id) from None


@router.get(
    "/machine_plot/{machine_id:path}.png",
    summary="PNG plot of a machine: its score and threshold over time, each sensor below",
    response_class=Response,
    responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}, "description": "The plot"}, **responses(404, 422)},
)
async def plot_machine(
    request: Request,
    machine_id: str,
    n: int | None = Query(None, ge=10, le=1_000_000, description="Rows to show; default and at most: all the machine holds (machines.buffer_rows)"),
    width: int = Query(900, ge=200, le=2400, description="Width in pixels"),
    height: int = Query(720, ge=300, le=2400, description="Height in pixels"),
) -> Response:
    from edge_agent.machines.operations import machine_plot_data

    live = _agent(request).machines
    m = live.set.machines.get(machine_id) if live is not None else None
    if m is None:
        raise _unknown(machine_id)
    renderer: PlotRenderer = request.app.state.plots
    version = m.model.version if m.model is not None else None
    # What the picture shows: rows closed, model, alarm edges, the request's window and size.
    key = ("machine", machine_id, m.n_rows, version, len(m.marks), m.state, n, width, height)
    png = renderer.cache.get(key)
    if png is None:
        data = machine_plot_data(live.set, machine_id, n)  # a copy, on the loop
        data.update(state=m.state, width=width, height=height,
                    model=f"{m.model.detector.name} v{version}" if m.model is not None else None)
        png = await renderer.offload(render_machine_png, data)
        renderer.renders += 1
        renderer.cache[key] = png
        while len(renderer.cache) > renderer.entries:
            renderer.cache.popitem(last=False)
    else:
        renderer.cache.move_to_end(key)
        renderer.hits += 1
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


class MachineFitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detector: str | None = Field(None, max_length=64, description="Machine detector name; default: machines.detector.name")
    params: dict[str, Any] | None = Field(None, description="Detector parameters; default: machines.detector.params")
    last_n: int | None = Field(None, ge=50, strict=True, description="Fit on this many recent complete rows; default: all held")


def _machine_errors(exc: Exception) -> ApiError:
    from edge_agent.machines.operations import UnknownMachine

    if isinstance(exc, UnknownMachine | operations.NoMachines):
        return ApiError(404, "unknown_machine", str(exc))
    if isinstance(exc, ModelLoadError):
        return ApiError(409, "no_such_version", str(exc))
    if isinstance(exc, OSError):
        return ApiError(503, "model_store_unavailable", f"cannot store the model: {exc}")
    return ApiError(400, "bad_request", str(exc))


@router.post("/machine_fit/{machine_id:path}", summary="Refit a machine on the complete rows it holds and activate it (token required)",
             responses=responses(400, 401, 403, 404, 422, 429, 503), dependencies=[Depends(require_token)])
async def fit_machine(request: Request, machine_id: str, body: MachineFitBody | None = None) -> dict[str, Any]:
    b = body or MachineFitBody()
    try:
        return await operations.fit_machine(_agent(request), operations.machine_id(machine_id), detector=b.detector,
                                            params=b.params, last_n=b.last_n)
    except (LookupError, ValueError, TypeError, OSError) as exc:
        raise _machine_errors(exc) from None


@router.post("/machine_rollback/{machine_id:path}", summary="Activate an older stored version of a machine's model (token required)",
             responses=responses(401, 403, 404, 409, 422, 429), dependencies=[Depends(require_token)])
async def rollback_machine(
    request: Request,
    machine_id: str,
    version: int | None = Query(None, ge=1, description="Version to activate; default: the one before the active one"),
) -> dict[str, Any]:
    try:
        return await operations.rollback_machine(_agent(request), operations.machine_id(machine_id), version)
    except (LookupError, ValueError, OSError, ModelLoadError) as exc:
        raise _machine_errors(exc) from None
