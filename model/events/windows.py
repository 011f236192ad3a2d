"""Context windows: the (truncated) history before a position, as a padded HistoryBatch.

Position e of user u means "predict u's event e from its events before e". The context is
the last ``max_len`` of those events; recency weights are seen from the latest of them,
w_j = exp(-(t_last - t_j)/τ) with τ = half_life / ln 2 (all ones without a half-life),
exactly what the serving state's ``t_ref`` gives.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import NDArray

from model.events.interactions import Interactions
from model.ranker import HistoryBatch


def history_batch(
    data: Interactions,
    users: NDArray[np.int64],
    ends: NDArray[np.int64],
    max_len: int,
    half_life_s: float | None = None,
    device: torch.device | str = "cpu",
) -> HistoryBatch:
    """Contexts of B (user, end) pairs: user u's flat events [max(start_u, end-L), end).

    Args:
        users: (B,) user rows. ends: (B,) flat (not per-user) exclusive end indices.
        max_len: L, the longest context kept (the most recent events).
    Returns:
        HistoryBatch with (B, L') tensors, L' = the longest context in the batch.
    """
    starts = data.offsets[users]  # (B,)
    lengths = np.minimum(ends - starts, max_len)  # (B,)
    width = max(int(lengths.max()), 1) if lengths.size else 1
    pos = ends[:, None] - width + np.arange(width)[None, :]  # (B, L') right-aligned
    mask = pos >= (ends - lengths)[:, None]  # (B, L')
    pos = np.where(mask, pos, 0)
    items = np.where(mask, data.items[pos], 0)
    actions = np.where(mask, data.actions[pos], 0)
    if half_life_s is None:
        weights = np.ones(pos.shape, dtype=np.float32)
    else:
        t_last = data.ts[np.maximum(ends - 1, 0)]  # (B,)
        age = np.where(mask, t_last[:, None] - data.ts[pos], 0.0)
        weights = np.exp(-age * math.log(2.0) / half_life_s).astype(np.float32)
    return HistoryBatch(
        items=torch.from_numpy(items).to(device),
        actions=torch.from_numpy(actions).to(device),
        mask=torch.from_numpy(mask).to(device),
        weights=torch.from_numpy(weights).to(device),
    )


def training_positions(data: Interactions, holdout: int = 2) -> tuple[NDArray, NDArray]:
    """(users, positions) of every training target: events 1 .. L_u-holdout-1 of each user.

    The last ``holdout`` events of each user (validation, test) are never targets; event 0
    has no context and is skipped. Positions are flat indices into the event arrays.
    """
    users, positions = [], []
    for u in range(data.n_users):
        lo, hi = int(data.offsets[u]) + 1, int(data.offsets[u + 1]) - holdout
        if hi > lo:
            positions.append(np.arange(lo, hi))
            users.append(np.full(hi - lo, u))
    if not positions:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(users).astype(np.int64), np.concatenate(positions).astype(np.int64)
