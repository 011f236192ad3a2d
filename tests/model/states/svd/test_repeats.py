"""The repeat channel's hashed item counts (``RepeatCounts``): a count-min sketch that never
counts an item below its weighted count, absorbs blocks in any order and any split to the
state a one-shot build gives (with decay too), ignores OOV rows, and survives the blob (whose
malformed counts section is a StateFormatError)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.repeats import REPEAT_HASHES, item_buckets
from model.states import Decay, LowRankState, StateFormatError
from model.states.base import advance
from model.states.svd.repeats import RepeatCounts

HALF_LIFE = Decay(50.0)


def _count(counts: RepeatCounts, item: int) -> float:
    """The sketch's count of one item row: the smallest of its buckets."""
    buckets = item_buckets(np.array([item]), counts.buckets)[:, 0]
    return float(counts.counts[np.arange(REPEAT_HASHES), buckets].min())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=200), st.integers(1, 64))
def test_a_count_is_never_below_the_items_count_and_oov_counts_nowhere(
    items: list[int], buckets: int
) -> None:
    rows = np.asarray(items)
    counts = RepeatCounts.empty(buckets).merged(rows, None)
    assert counts.counts.sum(axis=1) == pytest.approx([np.count_nonzero(rows)] * REPEAT_HASHES)
    for item in set(items) - {0}:
        assert _count(counts, item) >= items.count(item)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(0, 2**31 - 1), st.booleans())
def test_blocks_in_any_order_give_the_one_shot_counts(n: int, seed: int, decayed: bool) -> None:
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 40, n)
    ts = rng.uniform(0.0, 500.0, n)
    decay = HALF_LIFE if decayed else None
    whole = RepeatCounts.empty(16).merged(items, advance(None, ts, decay))
    state, t_ref = RepeatCounts.empty(16), None
    order = rng.permutation(n)
    for block in np.array_split(order, rng.integers(1, n + 1)):
        if block.size:
            clock = advance(t_ref, ts[block], decay)
            state, t_ref = state.merged(items[block], clock), clock.t_ref
    np.testing.assert_allclose(state.counts, whole.counts, rtol=1e-9, atol=1e-12)


def test_without_collisions_the_counts_are_exact() -> None:
    counts = RepeatCounts.empty(4_096).merged(np.array([3, 3, 3, 9, 0, 9]), None)
    assert [_count(counts, i) for i in (3, 9, 5)] == [3.0, 2.0, 0.0]


def _with_counts(counts: RepeatCounts) -> bytes:
    state = LowRankState.from_rows(np.eye(4), 2, oversample=0)
    return LowRankState(**{**state.__dict__, "repeats": counts}).to_bytes()


def test_the_counts_survive_the_blob_and_a_malformed_section_is_refused() -> None:
    counts = RepeatCounts.empty(8).merged(np.array([1, 2, 2, 7]), None)
    blob = _with_counts(counts)
    decoded = LowRankState.from_bytes(blob).repeats
    assert decoded is not None
    np.testing.assert_array_equal(decoded.counts, counts.counts)
    body = blob[:-4]
    at = body.index(struct.pack("<HI", REPEAT_HASHES, 8))  # the section's header

    def resealed(raw: bytes) -> bytes:
        return raw + struct.pack("<I", zlib.crc32(raw))

    bad_rows = body[:at] + struct.pack("<HI", 3, 8) + body[at + 6 :]
    too_many = body[:at] + struct.pack("<HI", REPEAT_HASHES, 1_000) + body[at + 6 :]
    negative = body[: at + 6] + struct.pack("<f", -1.0) + body[at + 10 :]
    for broken in (bad_rows, too_many, negative, body[: at + 3]):
        with pytest.raises(StateFormatError):
            LowRankState.from_bytes(resealed(broken))
