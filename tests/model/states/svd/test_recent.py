"""The recent-events window of the `svd` hybrid: the k latest events, in time order, O(k + b)."""

from __future__ import annotations

import numpy as np
import pytest

from model.states import RecentEvents, StateError


def test_keeps_the_k_latest_events_in_time_order_whatever_the_arrival_order() -> None:
    rng = np.random.default_rng(0)
    ts = rng.permutation(50).astype(np.float64)
    items = (ts * 10).astype(np.int64) + 1
    window = RecentEvents.empty(6)
    for lo in range(0, 50, 7):  # blocks of 7, out of order
        window = window.merged(items[lo : lo + 7], items[lo : lo + 7] % 4, ts[lo : lo + 7])
        assert len(window) == min(lo + 7, 6)
    np.testing.assert_array_equal(window.ts, np.arange(44, 50, dtype=np.float64))
    np.testing.assert_array_equal(window.items, np.arange(44, 50) * 10 + 1)
    np.testing.assert_array_equal(window.actions, (np.arange(44, 50) * 10 + 1) % 4)


def test_ties_keep_arrival_order() -> None:
    window = (
        RecentEvents.empty(3).merged([1, 2], [0, 0], [5.0, 5.0]).merged([3, 4], [0, 0], [5.0, 5.0])
    )
    assert window.items.tolist() == [2, 3, 4]


def test_bad_input_is_refused() -> None:
    with pytest.raises(StateError):
        RecentEvents.empty(0)
    with pytest.raises(StateError):
        RecentEvents.empty(2).merged([1, 2], [0], [1.0, 2.0])
    with pytest.raises(StateError):
        RecentEvents.empty(2).merged([1], [0], [float("nan")])
