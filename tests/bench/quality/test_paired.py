"""bench/quality/paired.py: per-user AUCs and the paired difference of two rows with its
bootstrap interval over users."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench.quality.paired import UserAucs, paired_difference, user_aucs
from model.events.interactions import build_interactions
from model.metrics import gauc


def _aucs(users: tuple[str, ...], auc: list[float], weight: float = 11.0) -> UserAucs:
    return UserAucs(users, np.asarray(auc), np.full(len(users), weight))


def test_user_aucs_match_gauc_and_skip_oov_targets() -> None:
    # user "a": 3 events, target item 2; user "b": its target is out of vocabulary (row 0)
    ts = np.array([0.0, 1.0, 2.0] * 2)
    data = build_interactions(["a"] * 3 + ["b"] * 3, ["1", "3", "2", "1", "2", "3"], ts)
    data = dataclasses.replace(data, items=np.where(np.arange(6) == 5, 0, data.items))
    positives = np.array([0.5])
    negatives = [np.array([0.1, 0.5, 0.9, 0.2])]
    got = user_aucs(np.array([0, 1]), data, positives, negatives, None)
    assert got.users == ("a",)
    assert got.auc[0] == pytest.approx((2 + 0.5) / 4)
    scores = [np.concatenate((positives, negatives[0]))]
    labels = [np.array([1, 0, 0, 0, 0])]
    assert got.auc[0] == pytest.approx(gauc(scores, labels))
    assert got.weight[0] == 5
    with pytest.raises(ValueError, match="users for"):
        user_aucs(np.array([0, 1]), data, positives, negatives, 4)  # sampled: both kept


def test_paired_difference_pairs_users_across_seeds() -> None:
    rng = np.random.default_rng(0)
    users = tuple(f"u{i}" for i in range(400))
    base = rng.uniform(0.4, 0.9, (2, 400))  # two seeds, user variance far above the effect
    a = [_aucs(users, list(base[s] + 0.01)) for s in range(2)]
    b = [_aucs(users, list(base[s])) for s in range(2)]
    same = paired_difference(a, b)
    assert same.mean == pytest.approx(0.01)
    assert same.ci95[0] == pytest.approx(0.01) and same.ci95[1] == pytest.approx(0.01)
    assert same.users == 400
    noisy = [_aucs(users, list(base[s] + 0.01 + rng.normal(0, 0.05, 400))) for s in range(2)]
    diff = paired_difference(noisy, b)
    lo, hi = diff.ci95
    assert lo < diff.mean < hi and lo > 0  # paired: the effect is resolved despite the spread
    assert hi - lo < 0.02
    # only the users both runs tested count
    fewer = [_aucs(users[:100], list(base[s][:100] - 0.02)) for s in range(2)]
    assert paired_difference(fewer, b).users == 100
    assert paired_difference(fewer, b).mean == pytest.approx(-0.02)


def test_paired_difference_errors() -> None:
    one = _aucs(("x",), [0.5])
    with pytest.raises(ValueError, match="to pair with"):
        paired_difference([one], [])
    with pytest.raises(ValueError, match="no test user in common"):
        paired_difference([one], [_aucs(("y",), [0.5])])
