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
        ids: the ids as given (whole floats as ints), in request order.
        rows: (M,) int64 model rows; ``OOV_ITEM`` for ids outside the vocabulary.
        unknown: the ids outside the vocabulary, in request order.
    """

    ids: list[ItemId]
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
    Python bytecode and no Python object per candidate. When every id is an int and the
    vocabulary has a dense integer table (``int_rows``: ``Vocabulary.int_rows``), one gather
    from it replaces the dict probes (each of which reads the key and value objects: cache
    misses after a pass has evicted them). ``checked``: the caller's decoder already
    guaranteed every id is an int or a 1-256 character string.

    Raises:
        InvalidInput: naming ``body.candidates.<i>`` for the first id that is not an integer
            or a 1-256 character string.
    """
    ids = cast("list[ItemId]", list(candidates)) if checked else _checked_ids(candidates)
    rows = None if int_rows is None else _gathered(ids, int_rows)
    if rows is None:
        rows = np.fromiter(map(index.get, ids, repeat(OOV_ITEM)), dtype=np.int64, count=len(ids))
    unknown = [ids[i] for i in np.flatnonzero(rows == OOV_ITEM).tolist()]
    return CandidateRows(ids, rows, unknown)


def _gathered(ids: list[ItemId], int_rows: np.ndarray) -> np.ndarray | None:
    """Rows of ``ids`` from the dense integer table, or None unless every id is an int that
    fits int64 (ids past the table, or negative, are OOV: the table covers every integer id
    of the vocabulary)."""
    if not ids or set(map(type, ids)) != {int}:
        return None
    try:
        wanted = np.fromiter(cast("list[int]", ids), dtype=np.int64, count=len(ids))
    except OverflowError:  # an id past int64: no vocabulary id, but leave it to the dict
        return None
    inside = (wanted >= 0) & (wanted < int_rows.shape[0])
    return np.where(inside, int_rows[np.where(inside, wanted, 0)], OOV_ITEM)


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
