"""Every error leaves as ``{"error": <code>, "detail": <human text or list>}``; never a traceback."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_agent.redact import scrub_paths

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx response."""

    error: str
    detail: Any = None


class ApiError(Exception):
    """Raised by handlers for an expected failure: a status, a short code and a detail."""

    def __init__(self, status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def error_response(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> JSONResponse:
    # Error texts from the store and the OS name files: absolute paths are shortened (redact.py).
    return JSONResponse({"error": error, "detail": scrub_paths(detail)}, status_code=status, headers=headers)


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        # Keep it JSON-safe: ``ctx`` may hold exception objects, ``input`` may be huge.
        out.append({"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))})
    return out[:50]


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.detail, exc.headers)


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else None
    return error_response(exc.status_code, _code(exc.status_code), detail, dict(exc.headers or {}) or None)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", _validation_detail(exc))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A genuine bug: say so in the log with the traceback, and only a short note on the wire.
    log.error("HTTP %s %s failed", request.method, request.url.path[:200], exc_info=exc)
    return error_response(500, "internal_error", f"{type(exc).__name__}; see the agent log")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can return (all share ``ErrorBody``).

    The content type is spelt out: with ``model=`` FastAPI would document errors of HTML and PNG
    routes as HTML/PNG, but errors are always JSON.
    """
    schema = ErrorBody.model_json_schema()
    return {s: {"description": HTTPStatus(s).phrase, "content": {"application/json": {"schema": schema}}} for s in statuses}
