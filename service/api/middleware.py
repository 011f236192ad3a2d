"""ASGI middlewares: request timing and the request body limit.

``RequestMetricsMiddleware`` records ``solar_request_duration_seconds{route,status}``; ``route``
is the matched route template (``/users/{user_id}``), never the raw path, so the label stays
low-cardinality; requests that match no route are labelled ``unmatched``.

``BodyLimitMiddleware`` wraps ``receive``: a declared ``Content-Length`` over the limit is
refused before any byte is read, and a chunked body as soon as the bytes read so far pass it,
so an oversized body is never buffered whole.
"""

from __future__ import annotations

import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

__all__ = ["BodyLimitMiddleware", "BodyTooLarge", "RequestMetricsMiddleware"]


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestMetricsMiddleware:
    """Time every HTTP request from the first receive to the end of the response."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception escaping the app becomes a 500 further out

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.request_duration.labels(
                route=_route_template(scope), status=str(status)
            ).observe(time.perf_counter() - start)


class BodyTooLarge(HTTPException):
    """Raised from ``receive``; an ``HTTPException`` so that FastAPI's body reader re-raises it
    unchanged (it turns other exceptions into 400) and the error handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Refuse HTTP request bodies over ``max_body_bytes`` with 413, while reading."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _declared_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)
