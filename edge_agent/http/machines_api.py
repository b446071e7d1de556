"""Machines on the HTTP port (issue 14): ``GET /machines``, ``GET /machines/{id}`` and the
machine plot ``GET /machine_plot/{id}.png``.

Machine ids contain ``/`` (``{line}/{machine}``): the routes take them as a ``:path`` like the
series routes. The plot has its own prefix, not ``/plot/machine/...``: that path is also the
plot of a series named ``machine/...``, and a series and a machine may share an id.

Everything reads through ``operations`` (the same functions the signed commands use) on the
loop, where the machines are fed; the drawing runs in the plot worker processes
(``machine_render.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from edge_agent import operations
from edge_agent.http.errors import ApiError, responses
from edge_agent.http.machine_render import render_machine_png

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
