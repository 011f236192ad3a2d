"""What ``GET /users/{id}`` shows of a stored state, whatever its kind (``service.core.users``
reads the state; this module only describes it)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from model.config import LIVE_TOKEN_RTOL
from model.states import UserState
from service.core.serving_model import StateTag

__all__ = ["UserView", "served_singular_values", "view_of"]


def served_singular_values(sigma: np.ndarray, rank: int) -> list[float]:
    """The ``rank`` served singular values of a state's σ (ℓ, descending): values at or below
    ``LIVE_TOKEN_RTOL``·σ_1 (a history shorter than r, or of lower rank: masked tokens)
    read 0.0."""
    served = np.asarray(sigma[:rank], dtype=np.float64)  # (r,)
    floor = LIVE_TOKEN_RTOL * float(served[0]) if served.size else 0.0
    return [float(x) if x > floor else 0.0 for x in served]


class UserView(NamedTuple):
    """What ``GET /users/{id}`` shows of a stored state (as stored, stale or not)."""

    history_length: int
    pending: int
    rank: int  # svd: r; elastic: its k tokens; linear, mean: 0
    singular_values: list[float]  # svd: the r served σ, descending, 0.0 past the history's rank
    residual_ratio: float
    last_ts: float | None
    model_version: str
    state_kind: str  # svd, elastic, linear or mean
    state_bytes: int  # size of the stored blob


def view_of(state: UserState, pending: int) -> UserView:
    """The view of ``state`` with ``pending`` events acknowledged but not applied."""
    return UserView(
        history_length=state.n,
        pending=pending,
        rank=state.token_count,
        singular_values=served_singular_values(state.singular_values, state.token_count),
        residual_ratio=state.residual_ratio,
        last_ts=state.t_ref,
        model_version=StateTag.parse(state.tag).model_version,
        state_kind=state.kind,
        state_bytes=state.nbytes,
    )
