"""Operators' alarm endpoints: the alarm list (read-only), and ack / shelve / unshelve (token
required) of a series (``/ack/{series}``...) or a machine (``/machine_ack/{machine}``...),
calling the same ``operations.py`` the signed commands call."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from edge_agent import operations
from edge_agent.http.auth import require_token
from edge_agent.http.errors import ApiError, responses

router = APIRouter(tags=["alarms"])


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    condition: str | None = Field(None, description="Only this condition: model, hihi, hi, lo or lolo")
    alert_id: str | None = Field(None, max_length=64, description="Only the alarm with this alert_id")
    note: str | None = Field(None, max_length=operations.MAX_REASON)
    by: str | None = Field(None, max_length=operations.MAX_BY, description="The operator's name, recorded with the ack")


class ShelveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration_s: Annotated[float, Field(gt=0, description="Seconds, at most alarms.max_shelve_s")]
    reason: Annotated[str, Field(min_length=1, max_length=operations.MAX_REASON)]
    by: str | None = Field(None, max_length=operations.MAX_BY)


class UnshelveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str | None = Field(None, max_length=operations.MAX_BY)


def _operator(request: Request) -> operations.Operator:
    return request.app.state.agent


def _call(fn: Any, *args: Any, **kw: Any) -> dict[str, Any]:
    from edge_agent.machines.operations import UnknownMachine

    try:
        return fn(*args, **kw)
    except operations.NothingToDo as exc:
        raise ApiError(409, "nothing_to_do", str(exc)) from None
    except (UnknownMachine, operations.NoMachines) as exc:
        raise ApiError(404, "unknown_machine", str(exc)) from None
    except operations.OperationError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


@router.get("/alarms", summary="Alarms an operator should see: active first, by priority; shelves; alarm rate")
async def list_alarms(request: Request, offset: int = Query(0, ge=0, le=10_000_000), limit: int = Query(1000, ge=1, le=10_000)) -> dict[str, Any]:
    return operations.alarms(_operator(request), offset, limit)


@router.post("/ack/{series_id:path}", summary="Acknowledge a series' alarms (token required)",
             responses=responses(400, 401, 403, 409, 422, 429), dependencies=[Depends(require_token)])
async def ack(request: Request, series_id: str, body: AckBody | None = None) -> dict[str, Any]:
    b = body or AckBody()
    return _call(operations.ack, _operator(request), series_id, b.condition, b.alert_id,
                 by=operations.who("http", b.by), note=b.note)


@router.post("/shelve/{series_id:path}", summary="Shelve a series' alarms for a while, with a reason (token required)",
             responses=responses(400, 401, 403, 422, 429), dependencies=[Depends(require_token)])
async def shelve(request: Request, series_id: str, body: ShelveBody) -> dict[str, Any]:
    return _call(operations.shelve, _operator(request), series_id, body.duration_s, body.reason, by=operations.who("http", body.by))


@router.post("/unshelve/{series_id:path}", summary="End a series' shelve now (token required)",
             responses=responses(400, 401, 403, 409, 422, 429), dependencies=[Depends(require_token)])
async def unshelve(request: Request, series_id: str, body: UnshelveBody | None = None) -> dict[str, Any]:
    return _call(operations.unshelve, _operator(request), series_id, by=operations.who("http", (body or UnshelveBody()).by))


# A machine's alarm (issue 14): the same operations, naming the machine. Their own prefix, as
# /machine_plot: /ack/machine/... is the ack of a series named "machine/...".
@router.post("/machine_ack/{machine_id:path}", summary="Acknowledge a machine's alarm (token required)",
             responses=responses(400, 401, 403, 409, 422, 429), dependencies=[Depends(require_token)])
async def machine_ack(request: Request, machine_id: str, body: AckBody | None = None) -> dict[str, Any]:
    b = body or AckBody()
    return _call(operations.ack, _operator(request), None, b.condition, b.alert_id,
                 by=operations.who("http", b.by), note=b.note, machine=machine_id)


@router.post("/machine_shelve/{machine_id:path}", summary="Shelve a machine's alarms for a while, with a reason (token required)",
             responses=responses(400, 401, 403, 404, 422, 429), dependencies=[Depends(require_token)])
async def machine_shelve(request: Request, machine_id: str, body: ShelveBody) -> dict[str, Any]:
    return _call(operations.shelve, _operator(request), None, body.duration_s, body.reason, by=operations.who("http", body.by),
                 machine=machine_id)


@router.post("/machine_unshelve/{machine_id:path}", summary="End a machine's shelve now (token required)",
             responses=responses(400, 401, 403, 409, 422, 429), dependencies=[Depends(require_token)])
async def machine_unshelve(request: Request, machine_id: str, body: UnshelveBody | None = None) -> dict[str, Any]:
    return _call(operations.unshelve, _operator(request), None, by=operations.who("http", (body or UnshelveBody()).by),
                 machine=machine_id)
