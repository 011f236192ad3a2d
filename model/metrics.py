"""Offline ranking metrics for leave-last-out evaluation.

Each evaluated user contributes one positive (the held-out next item) and a set of negative
candidates. Scores are logits; ties count one half (the expected value under random
tie-breaking), so a constant scorer gets AUC 0.5 and rank (M+1)/2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

METRIC_NAMES = ("AUC", "GAUC", "LogLoss", "HR@10", "NDCG@10", "MRR")


class MetricError(ValueError):
    """Inputs to a metric have mismatched shapes or lack positives / negatives."""


class RankingMetrics(NamedTuple):
    """Offline metrics of one evaluation (each in [0, 1] except LogLoss, in nats)."""

    auc: float
    gauc: float
    logloss: float
    hr_at_10: float
    ndcg_at_10: float
    mrr: float
    users: int

    def as_dict(self) -> dict[str, float]:
        return dict(zip(METRIC_NAMES, self[:6], strict=True))


def _ranks(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks of x (ascending) with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(x)]))
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1..end
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """ROC AUC (Mann-Whitney): P(score of a positive > score of a negative), ties ½."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise MetricError(f"scores {s.shape} and labels {y.shape} differ in shape")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise MetricError("AUC needs at least one positive and one negative")
    rank_sum = float(_ranks(s)[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def gauc(scores: Sequence[ArrayLike], labels: Sequence[ArrayLike]) -> float:
    """Group AUC: per-user AUC averaged with weights = the user's number of impressions.

    Users whose labels are all positive or all negative are skipped.
    """
    total, weight = 0.0, 0
    for s, y in zip(scores, labels, strict=True):
        y_arr = np.asarray(y).astype(bool)
        if y_arr.all() or not y_arr.any():
            continue
        total += auc(s, y_arr) * y_arr.size
        weight += y_arr.size
    if weight == 0:
        raise MetricError("GAUC needs a user with both positives and negatives")
    return total / weight


def logloss(logits: ArrayLike, labels: ArrayLike) -> float:
    """Mean binary cross-entropy (nats) of sigmoid(logits) against 0/1 labels."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape or z.size == 0:
        raise MetricError(f"logits {z.shape} and labels {y.shape} must be equal and non-empty")
    # log(1 + e^z) - y z, computed stably.
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def target_rank(positive: float, negatives: ArrayLike) -> float:
    """1-based rank of the positive among itself and the negatives (ties count ½)."""
    neg = np.asarray(negatives, dtype=np.float64)
    return 1.0 + float(np.sum(neg > positive)) + 0.5 * float(np.sum(neg == positive))


def hit_rate(ranks: ArrayLike, k: int = 10) -> float:
    """Share of users whose target ranks within the top k."""
    return float(np.mean(np.asarray(ranks, dtype=np.float64) <= k))


def ndcg(ranks: ArrayLike, k: int = 10) -> float:
    """Mean NDCG@k with one relevant item per user: 1/log2(rank+1) if rank ≤ k else 0."""
    r = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)))


def mrr(ranks: ArrayLike) -> float:
    """Mean reciprocal rank of the targets."""
    return float(np.mean(1.0 / np.asarray(ranks, dtype=np.float64)))


def ranking_metrics(positives: ArrayLike, negatives: Sequence[ArrayLike]) -> RankingMetrics:
    """All metrics from per-user target logits (U,) and negative logits (one array per user).

    AUC and LogLoss pool all users' (positive, negatives) impressions; GAUC averages the
    per-user AUCs weighted by impressions; HR@10, NDCG@10 and MRR use the target's rank.
    """
    pos = np.asarray(positives, dtype=np.float64).ravel()
    if pos.size != len(negatives) or pos.size == 0:
        raise MetricError(f"{pos.size} positives for {len(negatives)} negative sets")
    negs = [np.asarray(n, dtype=np.float64).ravel() for n in negatives]
    if any(n.size == 0 for n in negs):
        raise MetricError("every user needs at least one negative")
    user_scores = [np.concatenate(([p], n)) for p, n in zip(pos, negs, strict=True)]
    user_labels = [np.concatenate(([1.0], np.zeros(n.size))) for n in negs]
    all_scores, all_labels = np.concatenate(user_scores), np.concatenate(user_labels)
    ranks = np.array([target_rank(p, n) for p, n in zip(pos, negs, strict=True)])
    value = RankingMetrics(
        auc=auc(all_scores, all_labels),
        gauc=gauc(user_scores, user_labels),
        logloss=logloss(all_scores, all_labels),
        hr_at_10=hit_rate(ranks, 10),
        ndcg_at_10=ndcg(ranks, 10),
        mrr=mrr(ranks),
        users=int(pos.size),
    )
    if not all(math.isfinite(v) for v in value[:6]):
        raise MetricError(f"non-finite metric values: {value}")
    return value
