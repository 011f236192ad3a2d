"""Paired comparison of the study's rows: user by user, on the same test users and negatives.

Every row of one (dataset, seed) scores the same users' test events against the same
candidates (``model.evaluate`` draws both from the seed alone), so two rows differ only by
their models. The difference of two rows is the impression-weighted mean over users of
AUC_a(u) − AUC_b(u) (the difference of their GAUCs), pooled over the seeds both rows ran; its
95% confidence interval is a percentile bootstrap over users (a user's seeds stay together),
far narrower than the spread of unpaired GAUCs, which counts the users' own variance twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from model.events.interactions import Interactions

__all__ = ["Paired", "UserAucs", "paired_difference", "user_aucs"]

RESAMPLES = 2_000
CHUNK = 200  # bootstrap resamples per block (bounds memory at CHUNK × users)


class UserAucs(NamedTuple):
    """One run's test users (external ids), their AUCs and weights (impressions: 1 + the
    negatives they were ranked against), in the same order."""

    users: tuple[str, ...]
    auc: NDArray[np.float64]
    weight: NDArray[np.float64]


class Paired(NamedTuple):
    """Mean difference a − b (GAUC points) and its 95% bootstrap interval over ``users``."""

    mean: float
    ci95: tuple[float, float]
    users: int


def user_aucs(
    users: NDArray[np.int64],
    data: Interactions,
    positives: NDArray[np.float64],
    negatives: Sequence[NDArray[np.float64]],
    sampled: int | None,
) -> UserAucs:
    """Per-user AUCs of ``model.evaluate.score_split``'s output for ``users`` (its order).

    With the whole catalogue (``sampled`` None) the scorer skips users whose test item is
    out of vocabulary; they are skipped here too, so the lists stay aligned.
    """
    if sampled is None:
        targets = data.offsets[users + 1] - 1
        users = users[data.items[targets] != 0]
    if users.size != len(negatives) or positives.size != len(negatives):
        raise ValueError(f"{users.size} users for {len(negatives)} scored users")
    auc = np.empty(len(negatives))
    weight = np.empty(len(negatives))
    for i, (p, n) in enumerate(zip(positives, negatives, strict=True)):
        auc[i] = (np.count_nonzero(n < p) + 0.5 * np.count_nonzero(n == p)) / n.size
        weight[i] = n.size + 1
    return UserAucs(tuple(data.users[u] for u in users), auc, weight)


def paired_difference(
    a: Sequence[UserAucs], b: Sequence[UserAucs], *, resamples: int = RESAMPLES, seed: int = 0
) -> Paired:
    """a − b over the users both runs of each seed tested (``a[i]`` pairs with ``b[i]``).

    Raises:
        ValueError: no seed pair, or no user in common.
    """
    if not a or len(a) != len(b):
        raise ValueError(f"{len(a)} runs to pair with {len(b)}")
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for run_a, run_b in zip(a, b, strict=True):
        index_b = {u: i for i, u in enumerate(run_b.users)}
        for i, user in enumerate(run_a.users):
            j = index_b.get(user)
            if j is None:
                continue
            w = run_a.weight[i]
            num[user] = num.get(user, 0.0) + w * (run_a.auc[i] - run_b.auc[j])
            den[user] = den.get(user, 0.0) + w
    if not num:
        raise ValueError("the runs have no test user in common")
    nums = np.fromiter(num.values(), dtype=np.float64)
    dens = np.fromiter((den[u] for u in num), dtype=np.float64)
    rng = np.random.default_rng(seed)
    means: list[NDArray[np.float64]] = []
    for lo in range(0, resamples, CHUNK):
        pick = rng.integers(0, nums.size, size=(min(CHUNK, resamples - lo), nums.size))
        means.append(nums[pick].sum(1) / dens[pick].sum(1))
    boot = np.concatenate(means)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Paired(float(nums.sum() / dens.sum()), (float(lo), float(hi)), int(nums.size))
