"""Request bodies: a size limit enforced while reading, and streamed NDJSON event parsing.

The limit is an ASGI middleware wrapping ``receive``: a declared ``Content-Length`` over the
limit is refused before any byte is read, and a chunked body is refused as soon as the bytes
read so far pass it, so an oversized body is never buffered whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import InvalidInput, PayloadTooLarge
from service.schemas import Event

__all__ = ["BodyLimitMiddleware", "BodyTooLarge", "parse_ndjson_events"]


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


def _event(line: bytes, number: int) -> Event:
    """One NDJSON line, validated exactly like an event of a JSON body."""
    try:
        return Event.model_validate_json(line)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        field = f"line {number}" + (f".{where}" if where else "")
        raise InvalidInput(field, first["msg"]) from exc


async def parse_ndjson_events(chunks: AsyncIterator[bytes], max_events: int) -> list[Event]:
    """Parse one JSON event per line as the body streams in; blank lines are skipped.

    Raises:
        InvalidInput: a line is not a valid event (422 naming ``line N.field``).
        PayloadTooLarge: more than ``max_events`` events (413, as soon as it is exceeded).
    """
    events: list[Event] = []
    buffer = b""
    number = 0
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            number += 1
            if line.strip():
                if len(events) >= max_events:
                    raise PayloadTooLarge("events per request", max_events)
                events.append(_event(line, number))
    if buffer.strip():
        if len(events) >= max_events:
            raise PayloadTooLarge("events per request", max_events)
        events.append(_event(buffer, number + 1))
    if not events:
        raise InvalidInput("body", "no events")
    return events
