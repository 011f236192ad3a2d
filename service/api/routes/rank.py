"""POST /rank: score candidates for a user (DESIGN §5)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.api.deps import RankingDep, SettingsDep, require_token
from service.api.routes.common import errors
from service.api.schemas import RankedItem, RankRequest, RankResponse
from service.errors import PayloadTooLarge

__all__ = ["router"]

router = APIRouter(tags=["rank"], dependencies=[Depends(require_token)])


@router.post(
    "/rank",
    response_model=RankResponse,
    responses=errors(401, 413, 422, 503),
    summary="Rank candidates for a user",
)
async def rank(body: RankRequest, ranking: RankingDep, settings: SettingsDep) -> RankResponse:
    """Score every candidate against the user's interests and return the best first.

    Unknown candidate ids are scored through the shared out-of-vocabulary row and listed in
    `unknown_items`; a user without history is ranked too (attention output zero).
    """
    if len(body.candidates) > settings.max_candidates:
        raise PayloadTooLarge("candidates per request", settings.max_candidates)
    outcome = await ranking.rank(body.user_id, body.candidates, body.top_k, body.mode.value)
    return RankResponse(
        user_id=body.user_id,
        model_version=outcome.model_version,
        mode=body.mode,
        history_length=outcome.history_length,
        items=[RankedItem(item_id=item, score=score) for item, score in outcome.items],
        unknown_items=outcome.unknown_items,
    )
