"""Streamed NDJSON event bodies of ``POST /ingest``: one event per line, parsed as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import ValidationError

from service.api.schemas import Event
from service.errors import InvalidInput, PayloadTooLarge

__all__ = ["parse_ndjson_events"]


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
