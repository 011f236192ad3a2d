"""GET and DELETE /users/{user_id}: inspect or forget a user (DESIGN §5)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from starlette.exceptions import HTTPException

from service.deps import ModelDep, StoreDep, require_token
from service.factors import parse_state
from service.keys import MAX_USER_ID_LENGTH
from service.routes.common import errors
from service.schemas import USER_ID_REGEX, UserDeleted, UserInfo

__all__ = ["router"]

router = APIRouter(tags=["users"], dependencies=[Depends(require_token)])

UserIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_USER_ID_LENGTH,
        pattern=USER_ID_REGEX,
        description="1-128 characters of [A-Za-z0-9_.:@-]",
    ),
]


@router.get(
    "/users/{user_id}",
    response_model=UserInfo,
    responses=errors(401, 404, 409, 422, 503),
    summary="Inspect a user's factors",
)
async def get_user(user_id: UserIdPath, store: StoreDep, model: ModelDep) -> UserInfo:
    """History length, rank, singular values, residual ratio, last event time and the model
    version of the stored factors (as stored: a state of another model is rebuilt on the next
    /rank or /ingest)."""
    parsed = parse_state(await store.get_state(user_id), model)
    state = parsed.state
    if state is None:
        if parsed.rebuild == "corrupt":
            raise HTTPException(409, "the stored state is unreadable")
        raise HTTPException(404, f"unknown user {user_id!r}")
    return UserInfo(
        user_id=user_id,
        history_length=state.n,
        rank=state.rank,
        singular_values=[float(x) for x in state.sigma],
        residual_ratio=state.residual_ratio,
        last_ts=state.t_ref,
        model_version=state.model_version.split("@", 1)[0],  # the tag without the half-life
    )


@router.delete(
    "/users/{user_id}",
    response_model=UserDeleted,
    responses=errors(401, 422, 503),
    summary="Forget a user",
)
async def delete_user(user_id: UserIdPath, store: StoreDep) -> UserDeleted:
    """Delete the user's state and event log."""
    return UserDeleted(user_id=user_id, deleted=await store.delete(user_id))
