"""Candidates scanned from a body's bytes map exactly as the ordinary path maps them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.vocabulary import Vocabulary
from service.core.items import candidate_rows
from service.core.raw_ids import ByteIndex, RawCandidates, _scan, scan_candidates

VOCAB = Vocabulary(
    ("7", "0", "alpha", "3", "007", "-5", "a b", "é", "x" * 256, "18446744073709551616")
)


def _scanned(ids: list[Any]) -> RawCandidates:
    found = scan_candidates(json.dumps(ids).encode())
    assert found is not None, ids
    return found


# Without negative or huge ids: the ordinary path maps its ints through the dense table.
DENSE = Vocabulary(("7", "0", "alpha", "3", "007", "a b", "x" * 256))


def _both(
    ids: list[Any], vocab: Vocabulary = VOCAB
) -> tuple[tuple[list[Any], list[int], list[Any]], ...]:
    """(ids, rows, unknown) of the raw path and of ``candidate_rows``."""
    raw = ByteIndex(vocab.items).rows(_scanned(ids))
    plain = candidate_rows(ids, vocab.item_index, int_rows=vocab.int_rows)
    return tuple((list(f.ids), f.rows.tolist(), list(f.unknown)) for f in (raw, plain))


def test_the_dense_tables_vocabulary_maps_alike() -> None:
    assert DENSE.int_rows is not None
    ids: list[Any] = [7, "7", 0, 3, "007", 8, 10**6, "alpha", "x" * 256, -1]
    raw, plain = _both(ids, DENSE)
    assert raw == plain and raw[1] == [1, 1, 2, 4, 5, 0, 0, 3, 7, 0]


def test_what_it_holds_is_sized_to_the_elements() -> None:
    """A body padded with spaces or with commas inside a string holds no more than its text
    and 17 bytes an element."""
    for text in (b"[1" + b" " * 100_000 + b"]", b'["' + b"," * 250 + b'", 7]'):
        found = scan_candidates(text)
        assert found is not None
        held = found.starts.nbytes + found.ends.nbytes + found.kinds.nbytes
        assert held == 17 * len(found) and len(found.text) == len(text)
        assert found.raw.base is not None  # a view of the text, not a copy


def test_ints_and_strings_map_as_the_dict_maps_them() -> None:
    ids: list[Any] = [7, "7", 0, "0", "alpha", 3, "007", 7, -5, "-5", "a b", 8, "beta", "x" * 256]
    raw, plain = _both(ids)
    assert raw == plain
    assert raw[1] == [1, 1, 2, 2, 3, 4, 5, 1, 6, 6, 7, 0, 0, 9]
    assert raw[2] == [8, "beta"]
    assert [type(i) for i in raw[0]] == [type(i) for i in ids]  # echoed as sent


def test_a_wrong_table_shows() -> None:
    """The rows come from the byte index, not from anywhere else."""
    index = ByteIndex(("alpha", "7"))
    assert index.rows(_scanned(["7", 7, "alpha", "nope"])).rows.tolist() == [2, 2, 1, 0]


@pytest.mark.parametrize(
    "text",
    [
        b"[]",  # empty: the ordinary path's 422
        b"[1.0]",  # whole float: the ordinary path makes it 1
        b"[1e3]",
        b"[-0]",  # the int 0, whose text is "0"
        b"[01]",
        b'["a\\u0062"]',  # an escape
        b'["\\",", 1, 2]',  # an escaped quote: the comma count is off, the scan declines
        b'["\xc3\xa9"]',  # non-ASCII
        b'[""]',
        b'["' + b"x" * 257 + b'"]',
        b"[1234567890123456789]",  # 19 digits
        b"[1, null]",
        b"[true]",
        b"[[1]]",
        b"[1,]",
        b"[1 2]",
        b"[1] x",
        b'["a\tb"]',  # a raw control character
        b"[-]",
        b"{}",
        b"",
    ],
)
def test_what_the_scan_declines(text: bytes) -> None:
    assert scan_candidates(text) is None


def test_the_scan_never_writes_past_its_arrays() -> None:
    text = np.frombuffer(b"[1, 2, 3]", dtype=np.uint8)
    short = np.full(2, -7, dtype=np.int64)
    assert _scan(text, short, short.copy(), np.zeros(2, dtype=np.int8)) == -1
    room = np.zeros(3, dtype=np.int64)
    assert _scan(text, room, room.copy(), np.zeros(3, dtype=np.int8)) == 3


def test_whitespace_and_the_longest_accepted_forms() -> None:
    found = scan_candidates(b' [ 123456789012345678 ,\n"' + b"x" * 256 + b'"\t, -9 ] ')
    assert found is not None
    assert list(found) == [123456789012345678, "x" * 256, -9]
    assert found[1:] == ["x" * 256, -9] and len(found) == 3


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(-(10**18) + 1, 10**18 - 1),
            st.sampled_from(VOCAB.items),
            st.text(  # printable ASCII that JSON writes without escapes
                st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"\\'),
                min_size=1,
                max_size=12,
            ),
            st.integers(0, 12).map(str),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_random_requests_map_as_the_dict_maps_them(ids: list[Any]) -> None:
    ascii_ids = [i for i in ids if isinstance(i, int) or i.isascii()]
    if ascii_ids:
        raw, plain = _both(ascii_ids)
        assert raw == plain
    if len(ascii_ids) < len(ids):  # a non-ASCII id: the ordinary path's
        assert scan_candidates(json.dumps(ids, ensure_ascii=False).encode()) is None


def test_a_large_vocabulary_probes_collisions_correctly() -> None:
    items = tuple(f"sku-{i}" for i in range(50_000))
    index = ByteIndex(items)
    assert index.slots.shape[0] >= 2 * len(items)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(items), 2_000).tolist()
    ids = [items[p] for p in picks] + ["sku-50000", "sku-", "ku-1"]
    assert index.rows(_scanned(ids)).rows.tolist() == [p + 1 for p in picks] + [0, 0, 0]
