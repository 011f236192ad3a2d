"""GET and DELETE /users/{user_id}: inspect or forget a user (docs/DESIGN.md §5)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from service.api.deps import UserStatesDep, require_token
from service.api.routes.common import errors
from service.api.schemas import UserDeleted, UserInfo
from service.user_ids import MAX_USER_ID_LENGTH, USER_ID_REGEX, USER_ID_RULE

__all__ = ["router"]

router = APIRouter(tags=["users"], dependencies=[Depends(require_token)])

UserIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_USER_ID_LENGTH,
        pattern=USER_ID_REGEX,
        description=USER_ID_RULE,
    ),
]


@router.get(
    "/users/{user_id}",
    response_model=UserInfo,
    responses=errors(401, 404, 409, 422, 503),
    summary="Inspect a user's factors",
)
async def get_user(user_id: UserIdPath, users: UserStatesDep) -> UserInfo:
    """Events applied and pending, rank, the r served singular values, residual ratio, last
    event time and the model version of the stored factors (as stored: a state of another
    model is rebuilt when next touched)."""
    view = await users.view(user_id)
    return UserInfo(user_id=user_id, **view._asdict())


@router.delete(
    "/users/{user_id}",
    response_model=UserDeleted,
    responses=errors(401, 422, 503),
    summary="Forget a user",
)
async def delete_user(user_id: UserIdPath, users: UserStatesDep) -> UserDeleted:
    """Delete the user from every tier (its durable history, then its state, event tail and
    dedup data at once); an applier still holding the user's events cannot bring it back."""
    return UserDeleted(user_id=user_id, deleted=await users.forget(user_id))
