"""Item and action vocabularies, and the canonical integer-id rule they key items by.

External item ids are strings in a checkpoint; an integer id and its decimal string are one id
(7 and "7"), but only when the string is exactly what ``str`` writes for the integer: "007",
"+7", " 7" and "²" are other ids. :func:`canonical_int` is that rule, in one place: the
vocabulary's index keys decimal ids by their int, and the service writes them back as ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from model.ranker import NO_ACTION, OOV_ITEM

__all__ = ["DENSE_ID_LIMIT", "Vocabulary", "VocabularyError", "canonical_int"]

# The largest integer id a dense id → row table covers (8 MiB of int64 at most); a
# vocabulary with a larger or a negative integer id maps its ids through the dict alone.
DENSE_ID_LIMIT = 1 << 20


class VocabularyError(ValueError):
    """A vocabulary that cannot index its ids (a duplicate)."""


def canonical_int(text: str) -> int | None:
    """The int whose ``str`` is exactly ``text`` ("42" → 42, "-3" → -3; "042", "+4", "²",
    " 4" → None)."""
    try:
        number = int(text)
    except ValueError:
        return None
    return number if str(number) == text else None


@dataclass(frozen=True)
class Vocabulary:
    """Item and action vocabularies. Row 0 of each table is reserved (OOV / no action).

    ``items[i]`` is the external id (as a string) of item row i+1; likewise ``actions``.
    An integer id and its decimal string are one id (:func:`canonical_int`).

    Raises:
        VocabularyError: an item or action id appears twice.
    """

    items: tuple[str, ...]
    actions: tuple[str, ...] = ()
    _item_index: dict[int | str, int] = field(init=False, repr=False, compare=False)
    _action_index: dict[str, int] = field(init=False, repr=False, compare=False)
    _int_rows: NDArray[np.int64] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        action_index = {action: i + 1 for i, action in enumerate(self.actions)}
        if len(set(self.items)) != len(self.items) or len(action_index) != len(self.actions):
            raise VocabularyError("vocabulary holds duplicate ids")
        index = _item_index(self.items)
        object.__setattr__(self, "_item_index", index)
        object.__setattr__(self, "_action_index", action_index)
        object.__setattr__(self, "_int_rows", _int_rows(index))

    @property
    def n_items(self) -> int:
        """Rows of the item table, including the OOV row."""
        return len(self.items) + 1

    @property
    def n_actions(self) -> int:
        return len(self.actions) + 1

    @property
    def item_index(self) -> dict[int | str, int]:
        """External id → row (the one mapping; read-only by convention). Decimal ids are
        keyed by their int too, so a lookup needs no ``str()`` per id."""
        return self._item_index

    @property
    def int_rows(self) -> NDArray[np.int64] | None:
        """The index's integer ids as one array: ``int_rows[i]`` is the row of integer id i
        (``OOV_ITEM`` where i is not an id), for i up to the largest integer id; None when
        the vocabulary has no integer id, a negative one, or one above DENSE_ID_LIMIT. Maps
        a request's integer ids with one gather instead of a dict probe per id."""
        return self._int_rows

    def item_row(self, item_id: int | str) -> int:
        """Row of an external item id, ``OOV_ITEM`` when unknown."""
        return self._item_index.get(item_id, OOV_ITEM)

    def action_row(self, action: str | None) -> int:
        return self._action_index.get(action, NO_ACTION) if action else NO_ACTION


def _item_index(items: tuple[str, ...]) -> dict[int | str, int]:
    index: dict[int | str, int] = {}
    for row, item in enumerate(items, start=1):
        index[item] = row
        number = canonical_int(item)
        if number is not None:
            index[number] = row
    return index


def _int_rows(index: dict[int | str, int]) -> NDArray[np.int64] | None:
    numbers = [k for k in index if isinstance(k, int)]
    if not numbers or min(numbers) < 0 or max(numbers) > DENSE_ID_LIMIT:  # before int64
        return None
    ids = np.array(numbers, dtype=np.int64)
    table = np.full(int(ids.max()) + 1, OOV_ITEM, dtype=np.int64)
    table[ids] = [index[int(i)] for i in ids]
    return table
