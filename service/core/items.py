"""Item ids as requests carry them, and their mapping to model rows.

An item id is an integer (not a bool; a whole float such as 3.0 counts as 3) or a string of
1-256 characters. Ids map to rows through the vocabulary's one index; an unknown id gets the
shared out-of-vocabulary row.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import cast

from model.ranker import OOV_ITEM
from service.errors import InvalidInput

__all__ = [
    "ITEM_ID_ERROR",
    "MAX_ITEM_ID_LENGTH",
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
    """A vocabulary id as the API writes it: an int when its decimal string is exactly
    ``text`` ("42" → 42), else the string ("007", "²" and " 4" stay strings: other ids)."""
    try:
        number = int(text)
    except ValueError:
        return text
    return number if str(number) == text else text


def vocabulary_page(items: Sequence[str], offset: int, limit: int) -> list[ItemId]:
    """Ids ``offset .. offset+limit-1`` of the vocabulary (row order), as :func:`external_id`
    writes them; empty past the end. ``offset`` ≥ 0, ``limit`` ≥ 1."""
    return [external_id(text) for text in items[offset : offset + limit]]


def candidate_rows(
    candidates: Sequence[object], index: dict[int | str, int]
) -> tuple[list[ItemId], list[int], list[ItemId]]:
    """Validate candidate ids and map them to model rows.

    Returns (ids, rows, unknown ids); unknown ids get the OOV row. Ints and strings (the
    normal case) take a vectorised path; anything else is checked one by one.

    Raises:
        InvalidInput: naming ``body.candidates.<i>`` for the first id that is not an integer
            or a 1-256 character string.
    """
    kinds = set(map(type, candidates))
    if kinds == {str}:  # C-level length checks
        lengths = list(map(len, cast("Sequence[str]", candidates)))
        plain = 0 < min(lengths) and max(lengths) <= MAX_ITEM_ID_LENGTH
    else:
        plain = kinds <= {int, str} and all(
            0 < len(c) <= MAX_ITEM_ID_LENGTH for c in candidates if isinstance(c, str)
        )
    if not plain:
        return _checked_rows(candidates, index)
    ids = cast("list[ItemId]", list(candidates))
    rows = list(map(index.get, ids, repeat(OOV_ITEM)))
    unknown = [c for c, row in zip(ids, rows, strict=True) if row == OOV_ITEM]
    return ids, rows, unknown


def _checked_rows(
    candidates: Sequence[object], index: dict[int | str, int]
) -> tuple[list[ItemId], list[int], list[ItemId]]:
    ids: list[ItemId] = []
    for i, raw in enumerate(candidates):
        item = item_id_or_none(raw)  # bools are refused, whole floats become ints
        if item is None:
            raise InvalidInput(f"body.candidates.{i}", ITEM_ID_ERROR)
        ids.append(item)
    rows = [index.get(c, OOV_ITEM) for c in ids]
    unknown = [c for c, row in zip(ids, rows, strict=True) if row == OOV_ITEM]
    return ids, rows, unknown
