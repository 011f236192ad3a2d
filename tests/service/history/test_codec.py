"""The segment codec: exact round trips for any records, compact output, corrupt blobs refused."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.history.codec import (
    FORMAT,
    RAW,
    SegmentFormatError,
    decode_segment,
    encode_segment,
)
from service.store.eventlog import RECORD_SIZE, LogFormatError, make_records


def _deflate(data: bytes) -> bytes:
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    return deflate.compress(data) + deflate.flush()


def realistic(n: int, *, seed: int = 0, ms: bool = True) -> bytes:
    rng = np.random.default_rng(seed)
    ts = 1.7e9 + np.cumsum(rng.exponential(60, n))
    ts = np.round(ts, 3) if ms else ts
    items = (rng.zipf(1.3, n) % 20_000).tolist()
    actions = [("view", "click", None)[a] for a in rng.integers(0, 3, n)]
    return make_records(ts, items, actions, [f"e{seed}-{i}" for i in range(n)]).tobytes()


ANY_RECORDS = st.integers(1, 60).flatmap(
    lambda n: st.binary(min_size=n * RECORD_SIZE, max_size=n * RECORD_SIZE)
)


@settings(max_examples=200, deadline=None)
@given(ANY_RECORDS)
def test_any_records_round_trip_bit_for_bit(records: bytes) -> None:
    assert decode_segment(encode_segment(records)) == records  # NaN, inf, -0.0 included


@pytest.mark.parametrize("ms", [True, False])
@pytest.mark.parametrize("n", [1, 7, 300, 70_000])
def test_realistic_segments_round_trip(n: int, ms: bool) -> None:
    records = realistic(n, ms=ms)
    assert decode_segment(encode_segment(records)) == records


def test_large_segments_cost_about_11_bytes_per_event_with_event_ids() -> None:
    blob = encode_segment(realistic(10_000))
    assert len(blob) / 10_000 < 11.5  # 20-byte records; the 5-byte event ids do not compress
    assert len(encode_segment(realistic(100))) / 100 < 13.5
    assert len(encode_segment(realistic(1))) < 50


def test_many_distinct_items_use_wide_indexes() -> None:
    n = 70_000  # > 65,536 distinct items: 4-byte indexes
    rng = np.random.default_rng(1)
    records = make_records(rng.random(n), list(range(n)), [None] * n, [None] * n).tobytes()
    assert decode_segment(encode_segment(records)) == records


def test_bad_input_is_refused() -> None:
    with pytest.raises(LogFormatError):
        encode_segment(b"x" * 21)
    with pytest.raises(ValueError, match="at least one event"):
        encode_segment(b"")


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        bytes([FORMAT + 1]) + encode_segment(realistic(5))[1:],  # unknown format version
        encode_segment(realistic(5))[:-3],  # truncated
        encode_segment(realistic(5))[:40],  # truncated in the event ids
        bytes([FORMAT]) + b"garbage",
        bytes([RAW]) + b"x" * 21,  # plain, not whole records
        bytes([FORMAT]) + struct.pack("<IIBBBqI", 3, 1, 2, 1, 0, 0, 12) + _deflate(b"x" * 12),
        bytes([FORMAT]) + struct.pack("<IIBBBqI", 3, 1, 9, 1, 0, 0, 6) + b"\x00" * 99,  # mode
        bytes([FORMAT]) + struct.pack("<IIBBBqI", 2, 1, 2, 3, 0, 0, 6) + b"\x00" * 99,  # width
    ],
)
def test_corrupt_blobs_raise_segment_format_error(blob: bytes) -> None:
    with pytest.raises(SegmentFormatError):
        decode_segment(blob)


def test_plain_segments_hold_the_records_as_they_are() -> None:
    records = realistic(20)
    blob = encode_segment(records, compact=False)
    assert blob == bytes([RAW]) + records
    assert decode_segment(blob) == records
