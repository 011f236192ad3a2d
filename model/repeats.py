"""The repeat channel of `lifelong`: how often the user consumed the candidate item itself.

On purchase logs a large share of the next events are re-purchases, many of items last bought
far outside any short window (Complete Journey: 14% of the test targets were bought before,
but not among the 50 latest events). Interest tokens summarise the history's directions, not
its items, so the lifelong model also keeps a count of every item over the whole history,
hashed to a fixed size (docs/DESIGN.md §2):

* the state keeps ``REPEAT_HASHES`` rows of K buckets (``repeat_buckets``); an event of item
  row i adds its recency weight w_j to bucket h_k(i) of each row k (OOV row 0 adds nothing);
* a candidate's count is the smallest of its buckets over the rows (a count-min sketch: never
  below the true weighted count, above it only where other items share all its buckets);
* the scoring MLP reads ``REPEAT_FEATURES`` = 2 features of it: log(1 + count) and the
  count's share of the user's total weight.

Training computes the same counts from the context (:func:`repeat_counts`) with the same
hashes (:func:`item_buckets`, integer arithmetic identical in numpy and torch), so serving
equals training; an update costs O(b) for a block of b events, whatever the history length.
"""

from __future__ import annotations

from typing import TypeVar, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from model.config import REPEAT_HASHES

__all__ = [
    "REPEAT_FEATURES",
    "REPEAT_HASHES",
    "item_buckets",
    "repeat_counts",
    "repeat_features",
    "served_repeat_features",
]

REPEAT_FEATURES = 2  # log(1 + count), count / total weight
# h_k(i) = ((a_k·i + b_k) mod p) mod K, p the Mersenne prime 2^31 - 1: item rows < 2^31 and
# a_k < 2^31 keep a_k·i inside int64, in numpy and in torch alike.
_PRIME = 2_147_483_647
_HASH_A = (1_103_515_245, 1_664_525)
_HASH_B = (12_345, 1_013_904_223)

_Ints = TypeVar("_Ints", NDArray[np.int64], Tensor)


def item_buckets(items: _Ints, buckets: int) -> _Ints:
    """Bucket of each item row in each sketch row: items (…,) int64 → (REPEAT_HASHES, …)."""
    rows = [((items * a + b) % _PRIME) % buckets for a, b in zip(_HASH_A, _HASH_B, strict=True)]
    if isinstance(items, Tensor):
        return cast(_Ints, torch.stack(cast(list[Tensor], rows)))
    return cast(_Ints, np.stack(rows))


def repeat_counts(
    candidates: Tensor, items: Tensor, weights: Tensor, buckets: int
) -> tuple[Tensor, Tensor]:
    """Training path: the sketch of each context, read at its candidates.

    Args:
        candidates: (B, M) long item rows. items: (B, N) long item rows of the context (0:
            OOV or padding, counted nowhere). weights: (B, N) recency weights, 0 where masked.
    Returns:
        counts (B, M) (0 for an OOV candidate) and the total weight (B,) of the counted events.
    """
    w = weights * (items != 0).to(weights.dtype)  # (B, N)
    B = items.shape[0]
    sketch = w.new_zeros(REPEAT_HASHES, B, buckets)
    sketch.scatter_add_(2, item_buckets(items, buckets), w.expand(REPEAT_HASHES, -1, -1))
    counts = sketch.gather(2, item_buckets(candidates, buckets)).amin(0)  # (B, M)
    return counts * (candidates != 0).to(counts.dtype), w.sum(1)


def repeat_features(counts: Tensor, total: Tensor) -> Tensor:
    """The MLP's repeat features: counts (…, M) and total weight (…,) → (…, M, 2)
    [log(1 + count), count / total] (the share is 0 for a user with no weight)."""
    share = counts / total.clamp_min(1e-12).unsqueeze(-1)
    share = torch.where(total.unsqueeze(-1) > 0, share, 0.0)
    return torch.stack((torch.log1p(counts), share), dim=-1)


def served_repeat_features(candidates: Tensor, counts: NDArray[np.float64]) -> Tensor:
    """Serving path: (M, 2) float32 repeat features of candidates (M,) long, read from a
    state's item counts (REPEAT_HASHES, K); the total weight is the sum of a row."""
    rows = candidates.numpy(force=True).astype(np.int64)
    picked = np.take_along_axis(counts, item_buckets(rows, counts.shape[1]), axis=1).min(0)
    picked = np.where(rows != 0, picked, 0.0)  # an OOV candidate counts nothing
    total = torch.tensor(float(counts[0].sum()), dtype=torch.float32)
    return repeat_features(torch.from_numpy(picked.astype(np.float32)), total)
