"""Item ids: validation and the mapping to model rows."""

from __future__ import annotations

from typing import Any

import pytest

from model.vocabulary import Vocabulary
from service.core.items import candidate_rows, item_id_or_none
from service.errors import InvalidInput


def _mapped(*args: Any, **kwargs: Any) -> tuple[list[Any], list[int], list[Any]]:
    found = candidate_rows(*args, **kwargs)
    assert found.rows.dtype.name == "int64"
    return found.ids, found.rows.tolist(), found.unknown


def test_candidate_rows_validates_and_maps() -> None:
    index: dict[int | str, int] = {"7": 1, 7: 1, "alpha": 2}
    assert _mapped([7, "7", "alpha", 9, "zz"], index) == (
        [7, "7", "alpha", 9, "zz"],
        [1, 1, 2, 0, 0],
        [9, "zz"],
    )
    assert _mapped([7.0, "alpha"], index) == ([7, "alpha"], [1, 2], [])
    for bad in ([1, True], [1, 1.5], [1, ""], [1, {}], [1, "x" * 257], [1, None]):
        with pytest.raises(InvalidInput) as info:
            candidate_rows(bad, index)
        assert info.value.field == "body.candidates.1"


def test_checked_ids_skip_the_per_id_check() -> None:
    index: dict[int | str, int] = {"7": 1, 7: 1}
    assert _mapped([7, "x", 10**30], index, checked=True) == (
        [7, "x", 10**30],
        [1, 0, 0],
        ["x", 10**30],
    )


def test_item_id_or_none() -> None:
    assert item_id_or_none(3) == 3 and item_id_or_none(3.0) == 3 and item_id_or_none("x") == "x"
    for bad in (True, 3.5, "", "x" * 257, None, [1]):
        assert item_id_or_none(bad) is None


def test_a_string_only_request_takes_the_fast_path_and_still_checks_lengths() -> None:
    index: dict[int | str, int] = {"a": 1}
    assert _mapped(["a", "b"], index) == (["a", "b"], [1, 0], ["b"])
    with pytest.raises(InvalidInput) as info:
        candidate_rows(["a", "b", ""], index)
    assert info.value.field == "body.candidates.2"


@pytest.mark.parametrize("checked", [False, True])
def test_the_dense_integer_table_maps_as_the_dict_does(checked: bool) -> None:
    """Integer ids go through one gather from ``Vocabulary.int_rows`` and get exactly the
    dict's rows: known, unknown, past the table, negative, past int64; the strings of a
    mostly-int request probe the dict, a mostly-string one goes to the dict whole."""
    vocab = Vocabulary(("7", "0", "alpha", "3", "007"))
    assert vocab.int_rows is not None
    table = vocab.int_rows
    cases: list[list[Any]] = [
        [7, 0, 3, 5, 8, 10**6, -1, 7],
        [10**30, 7],
        [7, "007", "alpha", 3],
        [7, "alpha", 3, "beta", 0, 3, 10**6],
        ["alpha", "007", 7],
        [10**30, "alpha", 7],
    ]
    for ids in cases:
        dense = _mapped(ids, vocab.item_index, checked=checked, int_rows=table)
        assert dense == _mapped(ids, vocab.item_index, checked=checked)
    assert _mapped([7, 0, 3, 99], vocab.item_index, int_rows=table)[1] == [1, 2, 4, 0]
    broken = table.copy()
    broken[7] = 5  # a wrong table shows: the gather is really used for all-int requests
    assert _mapped([7], vocab.item_index, int_rows=broken)[1] == [5]
    assert _mapped([7, "x", 0], vocab.item_index, int_rows=broken)[1] == [5, 0, 2]
    assert _mapped(["alpha", "x", 7], vocab.item_index, int_rows=broken)[1] == [3, 0, 1]
    # Anything but ints and strings (a caller that broke ``checked``) goes to the dict whole.
    assert _mapped([7, 3.5], vocab.item_index, checked=True, int_rows=broken)[1] == [1, 0]
