"""model/lifelong.py: deterministic, well-formed, and the lifelong property holds (measured)."""

from __future__ import annotations

import numpy as np
import pytest

from model.datasets import load_dataset
from model.lifelong import LifelongConfig, LifelongData, generate_lifelong, window_miss_rate

SMALL = LifelongConfig(n_users=40, min_length=2_000, max_length=4_000, seed=3)


@pytest.fixture(scope="module")
def data() -> LifelongData:
    return generate_lifelong(SMALL)


def test_deterministic_by_seed(data: LifelongData) -> None:
    again = generate_lifelong(SMALL)
    assert np.array_equal(again.interactions.items, data.interactions.items)
    assert np.array_equal(again.interactions.ts, data.interactions.ts)
    other = generate_lifelong(
        LifelongConfig(n_users=40, min_length=2_000, max_length=4_000, seed=4)
    )
    assert not np.array_equal(other.interactions.items[:1000], data.interactions.items[:1000])


def test_well_formed(data: LifelongData) -> None:
    inter = data.interactions
    assert inter.n_users == SMALL.n_users
    assert SMALL.min_length <= inter.lengths.min() and inter.lengths.max() <= SMALL.max_length
    assert inter.items.min() >= 1 and inter.items.max() <= SMALL.n_items
    for u in range(inter.n_users):
        assert np.all(np.diff(inter.ts[inter.span(u)]) >= 0)
    shares = np.bincount(data.kinds, minlength=3) / data.kinds.size
    # a recurrence with no awake topic becomes a burst event, so recurrences are ≤ their share
    assert 0.5 * SMALL.recall_share < shares[0] <= SMALL.recall_share + 0.01
    assert abs(shares[2] - (1 - SMALL.recall_share - SMALL.burst_share)) < 0.01


def test_recurrences_come_from_long_term_topics(data: LifelongData) -> None:
    inter = data.interactions
    for u in range(0, inter.n_users, 7):
        span = inter.span(u)
        topics = data.topic_of(inter.items[span])[data.kinds[span] == 0]
        assert np.isin(topics, data.long_topics[u]).all()


def test_long_term_topics_go_dormant_for_thousands_of_events(data: LifelongData) -> None:
    inter = data.interactions
    gaps = []
    for u in range(inter.n_users):
        span = inter.span(u)
        topics = data.topic_of(inter.items[span])
        for k in data.long_topics[u]:
            seen = np.flatnonzero((topics == k) & (data.kinds[span] == 0))
            if seen.size > 1:
                gaps.append(np.diff(seen).max())
    longest = np.asarray(gaps)  # per (user, topic): the longest run of events without it
    # Always awake at the same mean rate, P(some gap ≥ 1,000 in ≤ 4,000 events) would be ~2%.
    assert (longest >= 1_000).mean() > 0.1
    assert np.median(longest) > 400


def test_last_window_misses_what_the_whole_history_holds() -> None:
    """Over test targets from long-term topics, the topic is (almost) always somewhere in the
    whole history but often absent from the last 200 (and more so the last 50) events."""
    big = generate_lifelong(LifelongConfig(n_users=400, min_length=1_000, max_length=3_000, seed=0))
    miss_200, present = window_miss_rate(big, 200)
    miss_50, _ = window_miss_rate(big, 50)
    assert present > 0.95
    assert miss_200 > 0.15
    assert miss_50 > miss_200 + 0.2


def test_registered_as_a_dataset() -> None:
    cfg = LifelongConfig(n_users=5, min_length=50, max_length=80)
    loaded = load_dataset("synthetic-lifelong", lifelong=cfg)
    assert np.array_equal(loaded.items, generate_lifelong(cfg).interactions.items)


def test_rejects_bad_configs() -> None:
    with pytest.raises(ValueError, match="multiple"):
        LifelongConfig(n_items=1001)
    with pytest.raises(ValueError, match="sum"):
        LifelongConfig(recall_share=0.6, burst_share=0.6)
