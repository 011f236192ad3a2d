"""POST /rank: score candidates for a user (DESIGN §5)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.deps import RankingDep, SettingsDep, require_token
from service.errors import PayloadTooLarge
from service.routes.common import errors
from service.schemas import RankRequest, RankResponse

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
    return await ranking.rank(body)
