"""Item ids as requests carry them, and their mapping to model rows.

An item id is an integer (not a bool; a whole float such as 3.0 counts as 3) or a string of
1-256 characters. Ids map to rows through the vocabulary's one index; an unknown id gets the
shared out-of-vocabulary row.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import NamedTuple, cast

import numpy as np

from model.ranker import OOV_ITEM
from model.vocabulary import canonical_int
from service.errors import InvalidInput

__all__ = [
    "ITEM_ID_ERROR",
    "MAX_ITEM_ID_LENGTH",
    "CandidateRows",
    "ItemId",
    "candidate_rows",
    "external_id",
    "item_id_or_none",
    "vocabulary_page",
]

ItemId = int | str
MAX_ITEM_ID_LENGTH = 256
ITEM_ID_ERROR = f"item ids are integers or strings of 1-{MAX_ITEM_ID_LENGTH} characters"


def item_id_or_none(value: object) -> ItemId | None:
    """``value`` as an item id (a whole float becomes an int), or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return value if 0 < len(value) <= MAX_ITEM_ID_LENGTH else None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def external_id(text: str) -> ItemId:
    """A vocabulary id as the API writes it: an int when ``text`` is a canonical integer
    (``model.vocabulary.canonical_int``: "42" → 42), else the string ("007", "²" and " 4"
    stay strings: other ids)."""
    number = canonical_int(text)
    return text if number is None else number


def vocabulary_page(items: Sequence[str], offset: int, limit: int) -> list[ItemId]:
    """Ids ``offset .. offset+limit-1`` of the vocabulary (row order), as :func:`external_id`
    writes them; empty past the end. ``offset`` ≥ 0, ``limit`` ≥ 1."""
    return [external_id(text) for text in items[offset : offset + limit]]


class CandidateRows(NamedTuple):
    """Candidates of one request, mapped.

    Attributes:
        ids: the ids as given (whole floats as ints), in request order (a list, or a lazy
            view of a body's bytes: ``service.core.raw_ids``).
        rows: (M,) int64 model rows; ``OOV_ITEM`` for ids outside the vocabulary.
        unknown: the ids outside the vocabulary, in request order.
    """

    ids: Sequence[ItemId]
    rows: np.ndarray
    unknown: list[ItemId]


def candidate_rows(
    candidates: Sequence[object],
    index: dict[int | str, int],
    *,
    checked: bool = False,
    int_rows: np.ndarray | None = None,
) -> CandidateRows:
    """Validate candidate ids (unless ``checked``) and map them to model rows.

    The lookup runs in C (``map`` of the index's ``get`` straight into ``np.fromiter``): no
    Python bytecode and no Python object per candidate. When the vocabulary has a dense
    integer table (``int_rows``: ``Vocabulary.int_rows``) and most ids are ints, one gather
    from it maps the ints and only the strings probe the dict (each probe reads the key and
    value objects: cache misses after a pass has evicted them, 2.6× the gather's cost on
    cold caches). ``checked``: the caller's decoder already guaranteed every id is an int or
    a 1-256 character string.

    Raises:
        InvalidInput: naming ``body.candidates.<i>`` for the first id that is not an integer
            or a 1-256 character string.
    """
    ids = cast("list[ItemId]", list(candidates)) if checked else _checked_ids(candidates)
    rows = None if int_rows is None else _gathered(ids, index, int_rows)
    if rows is None:
        rows = np.fromiter(map(index.get, ids, repeat(OOV_ITEM)), dtype=np.int64, count=len(ids))
    unknown = [ids[i] for i in np.flatnonzero(rows == OOV_ITEM).tolist()]
    return CandidateRows(ids, rows, unknown)


def _gathered(
    ids: list[ItemId], index: dict[int | str, int], int_rows: np.ndarray
) -> np.ndarray | None:
    """(M,) int64 rows of ``ids`` with the ints from the dense integer table and the strings
    from ``index``, or None (the caller's dict path) when there are no ints, fewer ints than
    strings, an int past int64, or anything but ints and strings. Ints past the table, or
    negative, are OOV: the table covers every integer id of the vocabulary."""
    kinds = set(map(type, ids))
    if int not in kinds or not kinds <= {int, str}:
        return None
    strings: list[int] = []
    values = cast("list[object]", ids)
    if kinds != {int}:  # a few strings among the ints (unknown ids, say)
        is_string = np.fromiter(map(isinstance, ids, repeat(str)), dtype=bool, count=len(ids))
        strings = np.flatnonzero(is_string).tolist()
        if 2 * len(strings) > len(ids):
            return None
        values = list(ids)
        for position in strings:
            values[position] = -1  # OOV in the table; its row comes from the dict below
    try:
        wanted = np.fromiter(cast("list[int]", values), dtype=np.int64, count=len(ids))
    except OverflowError:  # an id past int64: no vocabulary id, but leave it to the dict
        return None
    inside = (wanted >= 0) & (wanted < int_rows.shape[0])
    rows = np.where(inside, int_rows[np.where(inside, wanted, 0)], OOV_ITEM)
    for position in strings:
        rows[position] = index.get(ids[position], OOV_ITEM)
    return rows


def _checked_ids(candidates: Sequence[object]) -> list[ItemId]:
    """The ids, checked: ints and strings (the normal case) in C-level passes, anything else
    one by one (bools are refused, whole floats become ints)."""
    kinds = set(map(type, candidates))
    if kinds == {str}:  # C-level length checks
        lengths = list(map(len, cast("Sequence[str]", candidates)))
        plain = 0 < min(lengths) and max(lengths) <= MAX_ITEM_ID_LENGTH
    else:
        plain = kinds <= {int, str} and all(
            0 < len(c) <= MAX_ITEM_ID_LENGTH for c in candidates if isinstance(c, str)
        )
    if plain:
        return cast("list[ItemId]", list(candidates))
    ids: list[ItemId] = []
    for i, raw in enumerate(candidates):
        item = item_id_or_none(raw)
        if item is None:
            raise InvalidInput(f"body.candidates.{i}", ITEM_ID_ERROR)
        ids.append(item)
    return ids
