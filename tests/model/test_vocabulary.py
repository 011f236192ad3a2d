"""Vocabularies: lookups, duplicates, and the canonical integer-id rule."""

from __future__ import annotations

import pytest

from model.ranker import NO_ACTION, OOV_ITEM
from model.vocabulary import Vocabulary, VocabularyError, canonical_int

VOCAB = Vocabulary(tuple(str(i) for i in range(100, 120)), ("click", "like"))


def test_vocabulary_lookups() -> None:
    assert VOCAB.n_items == 21 and VOCAB.n_actions == 3  # row 0 reserved in both
    assert VOCAB.item_row(100) == VOCAB.item_row("100") == 1
    assert VOCAB.item_row("999") == VOCAB.item_row(999) == OOV_ITEM
    assert VOCAB.action_row("like") == 2
    assert VOCAB.action_row(None) == VOCAB.action_row("share") == NO_ACTION


@pytest.mark.parametrize(("items", "actions"), [(("a", "a"), ()), (("a",), ("x", "x"))])
def test_duplicate_ids_are_refused(items: tuple[str, ...], actions: tuple[str, ...]) -> None:
    with pytest.raises(VocabularyError, match="duplicate"):
        Vocabulary(items, actions)


def test_decimal_ids_are_ints_too_but_padded_ones_are_not() -> None:
    vocab = Vocabulary(("7", "007", "²", "x", "-3"))
    assert vocab.item_row(7) == vocab.item_row("7") == 1
    assert vocab.item_row("007") == 2 and vocab.item_row("²") == 3
    assert vocab.item_row(-3) == 5
    assert vocab.item_index == {"7": 1, 7: 1, "007": 2, "²": 3, "x": 4, "-3": 5, -3: 5}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("0", 0),
        ("-3", -3),
        ("12345678901234567890", 12345678901234567890),
        ("042", None),
        ("+4", None),
        (" 4", None),
        ("4 ", None),
        ("1_000", None),  # int() reads it; str() never writes it
        ("²", None),
        ("٣", None),  # an Arabic-Indic digit: int() reads it as 3
        ("-0", None),
        ("", None),
        ("x", None),
    ],
)
def test_canonical_int_is_the_int_whose_str_is_the_text(text: str, expected: int | None) -> None:
    assert canonical_int(text) == expected


def test_int_rows_is_the_dense_table_of_the_integer_ids() -> None:
    from model.vocabulary import DENSE_ID_LIMIT

    vocab = Vocabulary(("5", "2", "x", "007"))
    assert vocab.int_rows is not None
    assert vocab.int_rows.tolist() == [0, 0, 2, 0, 0, 1]  # "007" is a string id, not 7
    assert Vocabulary(("x", "y")).int_rows is None  # no integer id
    assert Vocabulary(("-1", "4")).int_rows is None  # a negative id
    assert Vocabulary(("1", str(DENSE_ID_LIMIT + 1))).int_rows is None  # too sparse
    assert Vocabulary(("1", str(1 << 64))).int_rows is None  # past int64: loads, no table
