from __future__ import annotations

import asyncio
import struct
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import service.store.eventlog as eventlog
from service.store.base import AppendRequest
from service.store.dedup_ring import digests
from service.store.eventlog import (
    EVENT_DTYPE,
    RECORD_SIZE,
    LogFormatError,
    action_key,
    decode_log,
    event_id_key,
    identity_keys,
    item_key,
    make_records,
)
from service.store.memory import MemoryStore


def encode_events(*columns: Any) -> bytes:
    """The log bytes of events given as ``make_records``'s four columns."""
    return make_records(*columns).tobytes()


Event = tuple[float, "int | str", "str | None", "str | None"]


def _columns(
    events: list[Event],
) -> tuple[list[float], list[int | str], list[str | None], list[str | None]]:
    """Events as the four parallel columns that ``encode_events`` takes."""
    return (
        [e[0] for e in events],
        [e[1] for e in events],
        [e[2] for e in events],
        [e[3] for e in events],
    )


def _records(events: list[Event]) -> np.ndarray:
    return make_records(*_columns(events))


def test_dtype_is_20_packed_little_endian_bytes() -> None:
    assert RECORD_SIZE == EVENT_DTYPE.itemsize == 20
    fields = EVENT_DTYPE.fields
    assert fields is not None
    assert [fields[name][1] for name in ("ts", "item", "action", "event_id")] == [0, 8, 14, 15]


def test_encoding_layout_matches_the_documented_bytes() -> None:
    blob = encode_events([1.25], [123], ["click"], ["ev-1"])
    expected = (
        struct.pack("<d", 1.25)
        + item_key(123)
        + bytes([action_key("click")])
        + event_id_key("ev-1")
    )
    assert blob == expected


def test_round_trip_is_20_bytes_per_event() -> None:
    ts = [1.5, 1_700_000_000.125, -3.0]
    items: list[int | str] = [7, "movie:Heat (1995)", 7]
    actions: list[str | None] = ["click", None, ""]
    event_ids: list[str | None] = ["a", None, "b"]
    blob = encode_events(ts, items, actions, event_ids)
    assert len(blob) == 20 * 3
    log = decode_log(blob)
    assert log.dtype == EVENT_DTYPE and log.shape == (3,)
    np.testing.assert_array_equal(log["ts"], ts)
    assert [bytes(x) for x in log["item"]] == [item_key(i) for i in items]
    assert log["action"].tolist() == [action_key(a) for a in actions]
    assert [bytes(x) for x in log["event_id"]] == [event_id_key(e) for e in event_ids]


def test_decode_accepts_any_buffer_and_empty() -> None:
    blob = encode_events([2.0], [1], [None], [None])
    for buf in (blob, bytearray(blob), memoryview(blob)):
        assert decode_log(buf)["ts"].tolist() == [2.0]
    assert decode_log(b"").shape == (0,)
    assert encode_events([], [], [], []) == b""


@pytest.mark.parametrize("length", [1, 19, 21, 39])
def test_decode_rejects_partial_records(length: int) -> None:
    with pytest.raises(LogFormatError, match=str(length)) as info:
        decode_log(bytes(length))
    assert isinstance(info.value, ValueError)


def test_make_records_rejects_columns_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        make_records([1.0, 2.0], [1], [None, None], [None, None])


def test_item_key_is_type_independent_and_6_bytes() -> None:
    assert item_key(123) == item_key("123")
    assert len(item_key(123)) == 6
    assert item_key(123) != item_key(124)
    assert item_key("a") != item_key("A")


@given(st.text())
def test_action_key_range(action: str) -> None:
    key = action_key(action)
    assert key == action_key(action)
    assert (key == 0) == (action == "")
    assert 0 <= key <= 255


def test_no_action_is_zero() -> None:
    assert action_key(None) == 0
    assert action_key("") == 0
    assert action_key("click") != 0


@given(st.text())
def test_event_id_key_is_never_zero(event_id: str) -> None:
    key = event_id_key(event_id)
    assert len(key) == 5 and key != bytes(5)


def test_event_id_none_is_zero() -> None:
    assert event_id_key(None) == bytes(5)
    assert event_id_key("x") != event_id_key("y")


def test_all_zero_digest_is_flipped(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real zero digest needs ~2^40 tries; fake the hash to reach the branch.
    zero = SimpleNamespace(digest=lambda: bytes(5))
    monkeypatch.setattr(eventlog, "hashlib", SimpleNamespace(blake2b=lambda *a, **k: zero))
    key = event_id_key("anything")
    assert key != bytes(5) and len(key) == 5
    assert key[1:] == bytes(4)  # exactly one byte changed


# ---- identity_keys: what dedup compares (the store's window is tested in test_store) ------


def _identity(event: tuple[float, int | str, str | None, str | None]) -> bytes:
    return identity_keys(_records([event]))


def test_same_event_id_is_the_same_identity_whatever_the_fields() -> None:
    assert _identity((1.0, 1, "click", "e1")) == _identity((2.0, 2, "buy", "e1"))
    assert _identity((1.0, 1, "click", "e1")) != _identity((1.0, 1, "click", "e2"))


def test_without_event_id_the_fields_are_the_identity() -> None:
    base = _identity((1.0, 1, "click", None))
    assert base == _identity((1.0, "1", "click", None))  # same item, other spelling
    for other in ((1.0, 1, "buy", None), (1.5, 1, "click", None), (1.0, 2, "click", None)):
        assert base != _identity(other), other


def test_event_id_and_no_event_id_never_match() -> None:
    assert _identity((1.0, 1, "click", "e1")) != _identity((1.0, 1, "click", None))


def test_identities_are_16_bytes_each_in_record_order() -> None:
    events = [(float(i), i, None, f"e{i}" if i % 2 else None) for i in range(5)]
    keys = identity_keys(_records(events))
    assert len(keys) == 16 * 5
    assert [keys[16 * i : 16 * (i + 1)] for i in range(5)] == [_identity(e) for e in events]


def _reference_mask(log: list[Event], new: list[Event], window: int) -> list[bool]:
    """Pairwise definition of a duplicate, O(window * batch)."""

    def same(a: Event, b: Event) -> bool:
        if a[3] is not None or b[3] is not None:
            return a[3] is not None and b[3] is not None and a[3] == b[3]
        return (a[0], str(a[1]), action_key(a[2])) == (b[0], str(b[1]), action_key(b[2]))

    recent = log[len(log) - min(window, len(log)) :]
    return [any(same(e, p) for p in recent + new[:i]) for i, e in enumerate(new)]


_events = st.lists(
    st.tuples(
        st.sampled_from([0.0, 1.0, 2.5]),
        st.sampled_from([1, "1", 2, "x"]),
        st.sampled_from([None, "", "click", "buy"]),
        st.sampled_from([None, None, "e1", "e2", "e3"]),
    ),
    max_size=24,  # two calls hold < 50 events: the ring never evicts here
)


@settings(max_examples=150, deadline=None)
@given(log=_events, new=_events)
def test_store_dedup_matches_the_pairwise_definition(log: list[Event], new: list[Event]) -> None:
    """MemoryStore (which has RedisStore's semantics, checked in test_store) drops exactly the
    events that match a stored event or an earlier one of the call, while the ring of W = 50
    holds all of them (the ring beyond W: tests/service/store/test_dedup_ring.py)."""
    store = MemoryStore()
    window = 50

    async def run() -> bytes:
        for records in (_records(log), _records(new)):
            digs = digests(identity_keys(records))
            request = AppendRequest("u", records.tobytes(), digs)
            await store.append_batch([request], dedup_window=window, create=True)
        return (await store.read_log("u", None, unapplied_only=False)).records

    kept_log = [e for e, dup in zip(log, _reference_mask([], log, window), strict=True) if not dup]
    kept_new = [
        e for e, dup in zip(new, _reference_mask(kept_log, new, window), strict=True) if not dup
    ]
    assert asyncio.run(run()) == _records(kept_log + kept_new).tobytes()


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=False),
            st.one_of(st.integers(), st.text(max_size=8)),
            st.one_of(st.none(), st.text(max_size=8)),
            st.one_of(st.none(), st.text(max_size=8)),
        ),
        max_size=20,
    )
)
def test_round_trip_property(events: list[Event]) -> None:
    blob = encode_events(
        [e[0] for e in events],
        [e[1] for e in events],
        [e[2] for e in events],
        [e[3] for e in events],
    )
    assert len(blob) == RECORD_SIZE * len(events)
    log = decode_log(blob)
    assert log["ts"].tolist() == [e[0] for e in events]
    assert [bytes(x) for x in log["item"]] == [item_key(e[1]) for e in events]
    assert log["action"].tolist() == [action_key(e[2]) for e in events]
    assert [bytes(x) for x in log["event_id"]] == [event_id_key(e[3]) for e in events]
