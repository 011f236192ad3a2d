"""The synthetic generator: determinism, structure and its ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from model.synthetic import (
    SyntheticConfig,
    engagement_probability,
    generate,
    relevant,
)

SMALL = SyntheticConfig(n_users=20, n_items=400, n_topics=20, min_length=300, max_length=500)


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b = generate(SMALL), generate(SMALL)
    np.testing.assert_array_equal(a.interactions.items, b.interactions.items)
    np.testing.assert_array_equal(a.interactions.ts, b.interactions.ts)
    c = generate(SyntheticConfig(**{**SMALL.__dict__, "seed": 1}))
    assert not np.array_equal(a.interactions.items[:300], c.interactions.items[:300])


def test_structure() -> None:
    data = generate(SMALL).interactions
    assert data.n_users == 20
    assert np.all((data.lengths >= 300) & (data.lengths <= 500))
    for u in range(data.n_users):
        assert np.all(np.diff(data.ts[data.span(u)]) >= 0)
    assert data.items.min() >= 1 and data.items.max() <= 400
    # Zipf popularity: the most popular item is far more frequent than the median one.
    counts = np.sort(np.bincount(data.items, minlength=401)[1:])[::-1]
    assert counts[0] > 10 * max(np.median(counts), 1)


def test_long_histories_are_cheap() -> None:
    cfg = SyntheticConfig(n_users=2, min_length=100_000, max_length=100_000)
    assert generate(cfg).interactions.n_events == 200_000


def test_ground_truth_explains_the_events() -> None:
    data = generate(SMALL)
    inter = data.interactions
    hits = [
        relevant(data, 0, j, inter.items[inter.offsets[0] + j : inter.offsets[0] + j + 1])[0]
        for j in range(200)
    ]
    assert np.mean(hits) > 1 - SMALL.noise - 0.1  # non-noise events come from interests
    all_items = np.arange(1, SMALL.n_items + 1)
    p = engagement_probability(data, 0, 10, float(inter.ts[10]), all_items)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    rel = relevant(data, 0, 10, all_items)
    assert p[rel].sum() > 0.8


def test_invalid_config() -> None:
    with pytest.raises(ValueError, match="multiple"):
        SyntheticConfig(n_items=101, n_topics=20)
