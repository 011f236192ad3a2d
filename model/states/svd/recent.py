"""The user's last k raw events, kept beside the factors for the `svd` hybrid (docs/DESIGN.md §2).

With ``recent_tokens = k > 0`` the ranker lets candidates attend to the r interest tokens and,
in the same softmax, to the rows x_j of the user's k latest events. The state keeps those
events as (item row, action row, time) triples: 16 bytes each, O(k + b) to absorb a block of
b events whatever the history length, and out-of-order events land where their time puts
them (ties keep arrival order, as the time-sorted training contexts do). The svd builder
(``model.states.builders``) merges every block of events into it; the factors ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from model.states.errors import StateError

__all__ = ["RecentEvents"]


@dataclass(frozen=True)
class RecentEvents:
    """Up to ``capacity`` latest events, oldest first.

    Attributes:
        capacity: k, the most events kept (≥ 1).
        items: (n,) int64 item rows, n ≤ k. actions: (n,) int64 action rows.
        ts: (n,) float64 unix seconds, non-decreasing.
    """

    capacity: int
    items: NDArray[np.int64]
    actions: NDArray[np.int64]
    ts: NDArray[np.float64]

    @classmethod
    def empty(cls, capacity: int) -> RecentEvents:
        if capacity < 1:
            raise StateError(f"capacity must be ≥ 1, got {capacity}")
        none = np.zeros(0, dtype=np.int64)
        return cls(capacity, none, none.copy(), np.zeros(0, dtype=np.float64))

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def merged(self, items: ArrayLike, actions: ArrayLike, ts: ArrayLike) -> RecentEvents:
        """The window after a block of events (b,) arrives: the k latest of old and new."""
        new_items = np.asarray(items, dtype=np.int64).reshape(-1)
        new_actions = np.asarray(actions, dtype=np.int64).reshape(-1)
        new_ts = np.asarray(ts, dtype=np.float64).reshape(-1)
        if not new_items.shape == new_actions.shape == new_ts.shape:
            raise StateError(
                f"items {new_items.shape}, actions {new_actions.shape} and ts {new_ts.shape} "
                "must have one entry per event"
            )
        if not np.all(np.isfinite(new_ts)):
            raise StateError("event times must be finite")
        all_ts = np.concatenate((self.ts, new_ts))
        keep = np.argsort(all_ts, kind="stable")[-self.capacity :]  # ties: arrival order
        return RecentEvents(
            self.capacity,
            np.concatenate((self.items, new_items))[keep],
            np.concatenate((self.actions, new_actions))[keep],
            all_ts[keep],
        )
