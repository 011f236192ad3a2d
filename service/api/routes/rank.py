"""POST /rank: score candidates for a user (docs/DESIGN.md §5)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from service.api.deps import MetricsDep, RankingDep, SettingsDep, require_token
from service.api.rank_body import decode_rank_body, encode_rank_response
from service.api.routes.common import errors
from service.api.schemas import RankResponse
from service.errors import PayloadTooLarge

__all__ = ["OFF_LOOP_BYTES", "router"]

router = APIRouter(tags=["rank"], dependencies=[Depends(require_token)])

# Bodies past this many bytes are decoded in a worker thread: msgspec reads ~1 GB/s, so this
# bounds what one request holds the event loop for to ~0.1 ms (a 2,048-candidate body is
# ~15 KB and is decoded inline: the thread hop would cost more than it saves).
OFF_LOOP_BYTES = 128 * 1024

# The body is read by hand (decoded straight into plain values, see `service.api.rank_body`),
# so its schema is declared here; `service.api.app` adds the component to the document.
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/RankRequest"}},
        },
    }
}


@router.post(
    "/rank",
    response_model=RankResponse,
    responses=errors(401, 413, 422, 503),
    openapi_extra=_BODY_DOC,
    summary="Rank candidates for a user",
)
async def rank(
    request: Request, ranking: RankingDep, settings: SettingsDep, metrics: MetricsDep
) -> Response:
    """Score every candidate against the user's interests and return the best first.

    Unknown candidate ids are scored through the shared out-of-vocabulary row and listed in
    `unknown_items`; a user without history is ranked too (attention output zero).
    """
    start = time.perf_counter()
    body = await request.body()
    received = time.perf_counter()
    metrics.stage("receive", received - start)
    content_type = request.headers.get("content-type")
    if len(body) > OFF_LOOP_BYTES:
        query = await asyncio.to_thread(decode_rank_body, body, content_type)
    else:
        query = decode_rank_body(body, content_type)
    metrics.stage("decode", time.perf_counter() - received)
    if len(query.candidates) > settings.max_candidates:
        raise PayloadTooLarge("candidates per request", settings.max_candidates)
    outcome = await ranking.rank(
        query.user_id,
        query.candidates,
        query.top_k,
        None if query.mode is None else query.mode.value,
        checked=query.checked,
    )
    encoding = time.perf_counter()
    answer = encode_rank_response(query, outcome)
    metrics.stage("encode", time.perf_counter() - encoding)
    return Response(answer, media_type="application/json")
