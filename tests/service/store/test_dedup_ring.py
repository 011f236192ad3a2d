"""The dedup ring: digests, its byte layout, and its guarantee beyond the window (an event
re-sent with its original ts is never stored twice, however late), on the Python twin that
test_store checks byte for byte against the Lua script."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.store.dedup_ring import BLOCK, DedupRing, check_window, digests, ring_size
from service.store.eventlog import decode_log, identity_keys, make_records


def _records(ts: list[float], ids: list[str | None]) -> np.ndarray:
    return make_records(ts, [int(t) % 7 for t in ts], [None] * len(ts), ids)


def test_digests_are_8_bytes_nonzero_and_follow_the_identity() -> None:
    recs = _records([1.0, 2.0, 1.0], ["a", "b", "a"])
    blob = digests(identity_keys(recs))
    assert len(blob) == 24 and blob[:8] == blob[16:] and blob[:8] != blob[8:16]
    assert bytes(8) not in (blob[:8], blob[8:16])


def test_window_must_be_a_multiple_of_the_block() -> None:
    assert check_window(4_000) == 4_000
    for bad in (0, BLOCK - 1, BLOCK + 1):
        with pytest.raises(ValueError, match="multiple"):
            check_window(bad)


def test_the_default_ring_fits_32_kib() -> None:
    assert ring_size(4_000) == 32_648 <= 32_768 - 8  # jemalloc's 32 KiB class, sds header


def test_bytes_round_trip_and_malformed_rings_are_refused() -> None:
    ring = DedupRing(100)
    recs = _records([float(i) for i in range(1, 151)], [None] * 150)
    counts = ring.admit(0, digests(identity_keys(recs)), recs["ts"])
    assert len(counts.fresh) == 150 and ring.watermark == 50.0  # blocks 1..50 and 51..100 ...
    again = DedupRing.from_bytes(ring.to_bytes())
    assert again.to_bytes() == ring.to_bytes() and again.watermark == ring.watermark
    with pytest.raises(ValueError, match="malformed"):
        DedupRing.from_bytes(ring.to_bytes()[:-1])


def test_replay_equals_the_incremental_ring() -> None:
    rng = np.random.default_rng(1)
    ts = np.sort(rng.uniform(0, 1_000, size=730))
    recs = _records(ts.tolist(), [f"e{i}" for i in range(730)])
    live = DedupRing(100)
    live.admit(0, digests(identity_keys(recs)), recs["ts"])
    rebuilt = DedupRing.replay(100, recs, last_seq=730)
    assert rebuilt.to_bytes() == live.to_bytes()


@settings(max_examples=100, deadline=None)
@given(
    calls=st.lists(
        st.lists(st.tuples(st.integers(0, 300), st.booleans()), min_size=1, max_size=60),
        min_size=1,
        max_size=20,
    )
)
def test_no_event_is_ever_stored_twice(calls: list[list[tuple[int, bool]]]) -> None:
    """Events 0..300 (ts = its number, an event id half the time), sent in any order, any
    number of times: each is stored at most once, whatever the ring forgot."""
    ring, seq = DedupRing(BLOCK), 0
    stored: list[int] = []
    for call in calls:
        ts = [float(n) for n, _ in call]
        recs = _records(ts, [f"e{n}" if with_id else None for n, with_id in call])
        counts = ring.admit(seq, digests(identity_keys(recs)), recs["ts"])
        seq += len(counts.fresh)
        assert len(counts.fresh) + counts.duplicates + counts.refused == len(call)
        kept = recs[counts.fresh]
        stored += [
            int(t) * 2 + any(bytes(e))
            for t, e in zip(kept["ts"], kept["event_id"].tolist(), strict=True)
        ]
    assert len(stored) == len(set(stored))


def test_in_order_streams_are_never_refused() -> None:
    ring, seq = DedupRing(BLOCK), 0
    for start in range(0, 1_000, 37):
        recs = _records([float(t) for t in range(start, start + 37)], [None] * 37)
        counts = ring.admit(seq, digests(identity_keys(recs)), recs["ts"])
        seq += len(counts.fresh)
        assert (len(counts.fresh), counts.duplicates, counts.refused) == (37, 0, 0)
    assert decode_log(recs.tobytes())["ts"][-1] == 1_035.0
