"""Offline metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.metrics import (
    MetricError,
    auc,
    gauc,
    hit_rate,
    logloss,
    mrr,
    ndcg,
    ranking_metrics,
    target_rank,
)


def test_auc_hand_computed() -> None:
    # Positives 0.9, 0.4; negatives 0.8, 0.3, 0.1: pairs won 3 + 2 of 6.
    assert auc([0.9, 0.8, 0.4, 0.3, 0.1], [1, 0, 1, 0, 0]) == pytest.approx(5 / 6)


def test_auc_counts_ties_as_half() -> None:
    assert auc([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx((0.5 + 1) / 2)
    assert auc([1.0] * 4, [1, 0, 1, 0]) == pytest.approx(0.5)


def test_auc_perfect_and_reversed() -> None:
    assert auc([3, 2, 1], [1, 0, 0]) == 1.0
    assert auc([1, 2, 3], [1, 0, 0]) == 0.0


def test_auc_needs_both_classes() -> None:
    with pytest.raises(MetricError):
        auc([0.1, 0.2], [1, 1])


def test_gauc_weights_users_by_impressions() -> None:
    # User A (4 impressions): AUC 2/3; user B (2 impressions): AUC 0; user C: one class only.
    scores = [[0.5, 0.9, 0.1, 0.2], [0.1, 0.7], [0.3, 0.4]]
    labels = [[1, 0, 0, 0], [1, 0], [0, 0]]
    assert gauc(scores, labels) == pytest.approx((2 / 3 * 4 + 0 * 2) / 6)


def test_logloss_hand_computed() -> None:
    expected = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(1 - 1 / (1 + math.exp(-1.0)))) / 2
    assert logloss([2.0, 1.0], [1, 0]) == pytest.approx(expected)
    assert logloss([0.0], [1]) == pytest.approx(math.log(2))
    assert np.isfinite(logloss([1000.0, -1000.0], [0, 1]))


def test_rank_based_metrics() -> None:
    assert target_rank(0.5, [0.9, 0.1, 0.7]) == 3.0
    assert target_rank(0.5, [0.5, 0.1]) == 1.5
    ranks = [1, 3, 11]
    assert hit_rate(ranks, 10) == pytest.approx(2 / 3)
    assert ndcg(ranks, 10) == pytest.approx((1.0 + 1 / math.log2(4) + 0.0) / 3)
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 11) / 3)


def test_ranking_metrics_pools_users() -> None:
    m = ranking_metrics([0.9, 0.2], [np.array([0.5, 0.1]), np.array([0.3, 0.4, 0.1])])
    # User 1 rank 1 (AUC 1), user 2 rank 3 (AUC 1/3); pooled: 0.9 beats 5, 0.2 beats 2 of 5.
    assert m.gauc == pytest.approx((1.0 * 3 + 1 / 3 * 4) / 7)
    assert m.auc == pytest.approx((5 + 2) / 10)
    assert m.hr_at_10 == 1.0
    assert m.mrr == pytest.approx((1 + 1 / 3) / 2)
    assert m.ndcg_at_10 == pytest.approx((1 + 1 / math.log2(4)) / 2)
    assert m.users == 2
    assert set(m.as_dict()) == {"AUC", "GAUC", "LogLoss", "HR@10", "NDCG@10", "MRR"}


def test_random_scores_give_chance_level() -> None:
    rng = np.random.default_rng(0)
    m = ranking_metrics(rng.normal(size=400), [rng.normal(size=99) for _ in range(400)])
    assert abs(m.auc - 0.5) < 0.03
    assert abs(m.hr_at_10 - 0.1) < 0.05


def test_ranking_metrics_rejects_mismatch() -> None:
    with pytest.raises(MetricError):
        ranking_metrics([0.1, 0.2], [np.array([0.3])])
    with pytest.raises(MetricError):
        ranking_metrics([0.1], [np.array([])])
