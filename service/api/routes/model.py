"""GET /model and GET /model/items: the loaded model, and its vocabulary page by page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import ModelDep
from service.api.routes.common import errors
from service.api.schemas import MAX_ITEMS_PAGE, ItemsPage, Mode, ModelInfo
from service.core.items import vocabulary_page

__all__ = ["router"]

router = APIRouter(tags=["model"])

DEFAULT_ITEMS_PAGE = 1_000


@router.get("/model", response_model=ModelInfo, responses=errors(503), summary="The loaded model")
async def model_info(model: ModelDep) -> ModelInfo:
    """Version (content hash), d, r, oversampling, half-life, vocabulary size, actions, the
    served modes and the default one. Not the vocabulary itself: page through it with
    ``GET /model/items``."""
    config = model.checkpoint.ranker.config
    vocab = model.checkpoint.vocab
    return ModelInfo(
        version=model.version,
        d=config.dim,
        r=model.rank,
        dim=config.dim,
        rank=model.rank,
        oversample=model.oversample,
        half_life_s=model.decay.half_life_s if model.decay is not None else None,
        vocabulary_size=len(vocab.items),
        n_items=vocab.n_items,
        actions=list(vocab.actions),
        modes=[Mode(mode) for mode in model.served_modes],
        default_mode=Mode(model.default_mode),
        state_kind=model.state_kind,
        device=str(model.device),
    )


@router.get(
    "/model/items",
    response_model=ItemsPage,
    responses=errors(422, 503),
    summary="Page through the vocabulary",
)
async def model_items(
    model: ModelDep,
    offset: Annotated[int, Query(ge=0, description="index of the first id to return")] = 0,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_ITEMS_PAGE, description=f"ids per page, 1-{MAX_ITEMS_PAGE} (422 above)"),
    ] = DEFAULT_ITEMS_PAGE,
) -> ItemsPage:
    """The vocabulary's item ids ``offset .. offset+limit-1`` in row order (the order is fixed
    for a model version): ask again with ``offset + limit`` until a page is short."""
    items = model.checkpoint.vocab.items
    return ItemsPage(
        offset=offset, limit=limit, total=len(items), items=vocabulary_page(items, offset, limit)
    )
