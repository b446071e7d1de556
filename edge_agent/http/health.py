"""``/healthz`` (alive), ``/readyz`` (serving), ``/healthcheck`` (the figures operators know)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from edge_agent import __version__, event_loop, series_budget
from edge_agent.http.schemas import Liveness, Readiness
from edge_agent.http.series_index import index_of
from edge_agent.http.series_view import num

if TYPE_CHECKING:  # the agent is composed in app.py; the HTTP layer never imports it at run time
    from edge_agent.agent import Agent

router = APIRouter(tags=["health"])


def _agent(request: Request) -> Agent:
    return request.app.state.agent


def not_ready_reasons(agent: Agent) -> list[str]:
    return agent.not_ready_reasons()


def _latency(summary: dict[str, float | int]) -> dict[str, float | int]:
    return {"count": summary["count"], "avg_ms": summary["avg_ms"], "p95_ms": summary["p95_ms"], "p99_ms": summary["p99_ms"], "max_ms": summary["max_ms"]}


def s3_state(agent: Agent) -> dict[str, Any]:
    s3 = getattr(agent, "s3", None)
    if s3 is None:
        return {"status": "disabled"}
    last_error = getattr(s3, "last_error", None)
    return {
        "status": "error" if last_error else "ok",
        "pending": getattr(s3, "pending", None),
        "last_success_ts": num(getattr(s3, "last_success_ts", None)),
        "last_error": str(last_error) if last_error else None,
        "last_attempt_ts": num(getattr(s3, "last_attempt_ts", None)),
        "pushed": getattr(s3, "pushed_total", None),
        "pulled": getattr(s3, "pulled_total", None),
    }


def http_state(request: Request) -> dict[str, Any]:
    guard = getattr(request.app.state, "connections", None)
    if guard is None:
        return {}
    return {
        "max_connections": guard.max_connections,
        "connections_refused": guard.refused,
        "timed_out": dict(guard.timed_out),
    }


@router.get("/healthz", response_model=Liveness, summary="Liveness: the process and its event loop answer (200), with health's problems")
async def healthz(request: Request) -> Liveness:
    # Always 200 while the loop answers: a restart would not fix an outbox stuck behind a
    # broker or a quarantined message, so they are reported here, not made fatal.
    return Liveness(status="alive", problems=_agent(request).health()["problems"])


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: broker connected (and stable), models loaded, outbox draining",
    responses={503: {"model": Readiness, "description": "Not ready; `reasons` says why"}},
)
async def readyz(request: Request) -> Any:
    agent = _agent(request)
    reasons = not_ready_reasons(agent)
    degraded = [p for p in agent.health()["problems"] if p not in reasons]
    body = Readiness(ready=not reasons, reasons=reasons, degraded=degraded)
    return body if not reasons else JSONResponse(body.model_dump(), status_code=503)


@router.get("/healthcheck", summary="Status and the operating figures of the agent")
async def healthcheck(request: Request) -> dict[str, Any]:
    agent = _agent(request)
    pipe, ingest, out, link = agent.pipeline, agent.ingest, agent.outbox, agent.link
    health = agent.health()
    doc: dict[str, Any] = {
        "status": "ok" if health["ok"] else "degraded",
        "problems": health["problems"],
        "warnings": health["warnings"],
        "model_errors": health["model_errors"],
        "gateway_id": agent.cfg.gateway_id,
        "agent_version": __version__,
        "uptime_s": round(time.time() - agent.started_at, 3),
        "event_loop": event_loop.name(asyncio.get_running_loop()),
        "ready": agent.ready(),
        "series": (await index_of(request.app.state, agent).snapshot()).counts,
        "series_budget": series_budget.view(pipe) if pipe else {},
        "trained_series": 0,
        "readings_total": ingest.readings if ingest else 0,
        "readings_per_second": round(request.app.state.reading_rate.rate(), 3),
        "rejected": dict(ingest.rejected) if ingest else {},
        "inference_latency_ms": _latency(pipe.score_latency.summary()) if pipe else None,
        "training_latency_ms": _latency(pipe.fit_latency.summary()) if pipe else None,
        "alarm_latency_ms": _latency(agent.alarm_latency.summary()) if agent.alarm_latency else None,
        "event_loop_lag_ms": _latency(agent.loop_lag.summary()) if agent.loop_lag else None,
        "alarms": {
            "raised": pipe.n_raised if pipe else 0,
            "cleared": pipe.n_cleared if pipe else 0,
        },
        "models": {
            "trained": pipe.n_models_trained if pipe else 0,
            "fit_failed": pipe.n_fit_failed if pipe else 0,
            "fit_deferred": pipe.n_fit_deferred if pipe else 0,
            "last_fit_error": pipe.last_fit_error if pipe else None,
        },
        "broker": {
            "status": "connected" if link.connected.is_set() else "disconnected",
            "protocol": link.protocol,
            "reconnects": link.reconnects,
            "last_error": link.last_error,
            "rejected_publishes": agent.broker_rejected,
        },
        "s3": s3_state(agent),
        "http": http_state(request),
        "outbox": {
            "status": "degraded" if out.degraded else "ok",
            "degraded": out.degraded,
            "depth": out.depth,
            "bytes": out.bytes,
            "oldest_age_s": round(out.oldest_age(), 3),
            "dropped": dict(out.dropped),
            "quarantined": dict(out.quarantined),
            "quarantine_rows": out.quarantine_rows,
            "unsendable": dict(agent.unsendable),
        },
    }
    if agent.sparkplug is not None:
        doc["sparkplug"] = agent.sparkplug.stats()
    doc["trained_series"] = doc["series"]["trained"]
    doc["alarms"]["active"] = doc["series"]["alarm"]
    return doc
