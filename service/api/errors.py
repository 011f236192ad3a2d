"""The one exception handler: every domain, store, validation and HTTP error → a JSON answer.

Bad input is 422 (naming the offending field) or 413 (over a limit), a missing or wrong token
401, an unreachable store, a full queue or a lost write race 503 with ``Retry-After``. Only a
bug yields a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import InvalidInput, ServiceError, StoreError

__all__ = ["handle_error", "install_error_handlers"]

logger = logging.getLogger(__name__)


def _field(loc: Iterable[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    return [
        {
            "field": _field(e.get("loc", ())),
            "message": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


def _value_error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message, "type": "value_error"}


def _classify(exc: Exception) -> tuple[int, str, str, list[dict[str, str]]]:
    """(status, metric reason, detail, field errors) of any exception the handler receives."""
    if isinstance(exc, RequestValidationError):
        errors = _validation_errors(exc.errors())
        first = errors[0]["field"] if errors else "body"
        return 422, "invalid", f"invalid request: {first}", errors
    if isinstance(exc, InvalidInput):
        return 422, exc.reason, str(exc), [_value_error(exc.field, exc.message)]
    if isinstance(exc, ServiceError):
        return exc.status_code, exc.reason, str(exc), []
    if isinstance(exc, StoreError):
        return 503, exc.reason, f"{exc.reason.replace('_', ' ')}: {exc}", []
    if isinstance(exc, StarletteHTTPException) and exc.status_code == 400:
        # FastAPI's body reader answers 400 for a body it cannot decode (not UTF-8).
        return 422, "invalid", "malformed request body", [_value_error("body", str(exc.detail))]
    if isinstance(exc, StarletteHTTPException):
        reason = {401: "unauthorized", 413: "too_large"}.get(exc.status_code, "http")
        return exc.status_code, reason, str(exc.detail), []
    return 500, "error", "internal error", []


def _allowed_methods(request: Request) -> str:
    """Every method documented for the route template that matched the path (Starlette's 405
    names only the methods of the first matching route, and GET and DELETE /users/{user_id}
    are two routes)."""
    route = request.scope.get("route")
    methods = set(getattr(route, "methods", None) or ())
    paths = request.app.openapi().get("paths", {})
    methods |= {method.upper() for method in paths.get(getattr(route, "path", None), {})}
    return ", ".join(sorted(methods))


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The single exception handler: a JSON ``{"detail", "errors"}`` body with the status."""
    status, reason, detail, errors = _classify(exc)
    headers: dict[str, str] = {}
    if status == 503:
        settings = getattr(request.app.state, "settings", None)
        headers["Retry-After"] = str(getattr(settings, "retry_after_s", 1))
        logger.warning("%s %s: 503 %s", request.method, request.url.path, detail)
    elif status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers.update(exc.headers)
    if status == 405:
        headers["Allow"] = _allowed_methods(request)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and status >= 400 and status not in (404, 405):
        metrics.rejected.labels(reason=reason).inc()
    body: dict[str, Any] = {"detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every domain, store, validation and HTTP error through :func:`handle_error`."""
    for exc_type in (
        ServiceError,
        StoreError,
        RequestValidationError,
        StarletteHTTPException,
    ):
        app.add_exception_handler(exc_type, handle_error)
