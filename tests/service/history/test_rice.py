"""Rice coding: exact for any uint64 values, near the entropy for geometric ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.history.rice import rice_decode, rice_encode


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=200))
def test_any_values_round_trip(values: list[int]) -> None:
    array = np.array(values, dtype=np.uint64)
    assert rice_decode(rice_encode(array), len(values)).tolist() == values


def test_geometric_gaps_cost_near_their_entropy() -> None:
    gaps = np.random.default_rng(0).geometric(1 / 60_000, 10_000).astype(np.uint64)
    k, remainders, quotients = rice_encode(gaps)
    bits = 8 * (len(remainders) + len(quotients)) / gaps.size
    entropy = np.log2(np.e * 60_000)  # bits of a geometric variable of mean 60,000
    assert entropy <= bits < entropy + 0.2
    assert k == 15


def test_short_streams_are_refused() -> None:
    k, remainders, quotients = rice_encode(np.arange(10, dtype=np.uint64) * 1000)
    with pytest.raises(ValueError, match="too short"):
        rice_decode((k, remainders, quotients[:1]), 10)
    with pytest.raises(ValueError, match="too short"):
        rice_decode((k, remainders[:-2], quotients), 10)
