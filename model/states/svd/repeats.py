"""The hashed item counts of `lifelong`'s repeat channel, kept beside the factors.

``REPEAT_HASHES`` rows of K buckets (``model.repeats``): every event of item row i > 0 adds
its recency weight to bucket h_k(i) of row k, so a candidate's count is the smallest of its
buckets. Weights are seen from the state's t_ref, like the factors' s and n_eff: a block's
clock (``model.states.base.advance``) ages the old counts by exp(shift) and weighs each new
event by its age. O(b + K) per block of b events whatever the history length;
4·REPEAT_HASHES·K bytes in the blob (16 KiB at K = 2,048).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from model.repeats import REPEAT_HASHES, item_buckets
from model.states.base import Clock
from model.states.errors import StateError

__all__ = ["RepeatCounts"]


@dataclass(frozen=True)
class RepeatCounts:
    """A count-min sketch of the user's items.

    Attributes:
        counts: (REPEAT_HASHES, K) float64 weighted counts, non-negative; every row sums to
            the total weight of the counted events.
    """

    counts: NDArray[np.float64]

    @classmethod
    def empty(cls, buckets: int) -> RepeatCounts:
        if buckets < 1:
            raise StateError(f"repeat buckets must be ≥ 1, got {buckets}")
        return cls(np.zeros((REPEAT_HASHES, buckets)))

    @property
    def buckets(self) -> int:
        return int(self.counts.shape[1])

    def merged(self, items: ArrayLike, clock: Clock | None) -> RepeatCounts:
        """The counts after a block of events: item rows (b,) weighed by ``clock`` (None: no
        times, every weight 1 and no ageing)."""
        rows = np.asarray(items, dtype=np.int64).reshape(-1)
        if clock is None:
            shift, weights = 0.0, np.ones(rows.shape[0])
        else:
            shift, weights = clock.shift, np.exp(clock.log_w)
        if weights.shape != rows.shape:
            raise StateError(f"{rows.shape[0]} items for {weights.shape[0]} weights")
        counted = rows != 0  # OOV row 0 counts nowhere, as in training
        counts = self.counts * math.exp(shift) if shift else self.counts.copy()
        buckets = item_buckets(rows[counted], self.buckets)  # (H, b')
        for k in range(REPEAT_HASHES):
            np.add.at(counts[k], buckets[k], weights[counted])
        return RepeatCounts(counts)
