"""POST /ingest: absorb events, as one JSON document or streamed NDJSON (docs/DESIGN.md §5)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from service.api.deps import IngestorDep, SettingsDep, require_token
from service.api.ndjson import parse_ndjson_events
from service.api.routes.common import errors
from service.api.schemas import Event, IngestRequest, IngestResponse
from service.core.ingest import EventColumns
from service.errors import PayloadTooLarge

__all__ = ["NDJSON", "router"]

NDJSON = "application/x-ndjson"

router = APIRouter(tags=["ingest"], dependencies=[Depends(require_token)])

# The body is read by hand (to stream NDJSON), so its schema is declared here; the two
# component schemas are added to the document by `service.api.app`.
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/IngestRequest"}},
            NDJSON: {
                "schema": {"$ref": "#/components/schemas/Event"},
                "description": "one Event JSON object per line, streamed",
            },
        },
    }
}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _json_events(request: Request, max_events: int) -> list[Event]:
    media_type = _media_type(request)
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(415, f"unsupported Content-Type {media_type!r}")
    try:
        body = IngestRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc
    if len(body.events) > max_events:
        raise PayloadTooLarge("events per request", max_events)
    return body.events


@router.post(
    "/ingest",
    response_model=IngestResponse,
    responses=errors(401, 413, 415, 422, 503),
    openapi_extra=_BODY_DOC,
    summary="Ingest events",
)
async def ingest(
    request: Request,
    ingestor: IngestorDep,
    settings: SettingsDep,
    wait: Annotated[
        bool,
        Query(
            description="answer only once every user's factors cover these events "
            "(read-your-writes); 503 with Retry-After if that takes over SOLAR_INGEST_WAIT_S"
        ),
    ] = False,
) -> IngestResponse:
    """Store events in each user's log and announce them to the appliers; acknowledged once
    stored. The factors follow asynchronously (see `pending` in GET /users/{id}), or before
    the answer with `wait=true`.

    Re-sent events (same `event_id`, or without one the same user, item, ts and action)
    among a user's last W events (`SOLAR_DEDUP_WINDOW`, 4,000) are counted as duplicates and
    change nothing; events older than that window remembers are counted as `refused` and
    not stored, so no event is ever applied twice.
    """
    if _media_type(request) == NDJSON:
        events = await parse_ndjson_events(request.stream(), settings.max_events)
    else:
        events = await _json_events(request, settings.max_events)
    result = await ingestor.ingest(
        EventColumns(
            user_ids=[e.user_id for e in events],
            ts=[e.ts for e in events],
            items=[e.item_id for e in events],
            actions=[e.action for e in events],
            event_ids=[e.event_id for e in events],
        ),
        wait=wait,
    )
    return IngestResponse(
        accepted=result.accepted,
        duplicates=result.duplicates,
        users=result.users,
        refused=result.refused,
    )
