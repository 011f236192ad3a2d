"""Interaction logs in a compact per-user layout (files are read by ``model.events.logfile``).

A log holds events (user, item, timestamp, optional action). :class:`Interactions` keeps
them grouped by user and sorted by time (CSR layout: ``offsets`` into flat arrays), with
items and actions already mapped to embedding rows of a :class:`Vocabulary`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from model.vocabulary import Vocabulary


class DatasetError(ValueError):
    """An interaction file is missing, malformed, or its events are out of order."""


@dataclass(frozen=True)
class Interactions:
    """Events grouped by user, sorted by time within each user.

    Attributes:
        users: U external user ids.
        offsets: (U+1,) int64; user u owns events offsets[u]:offsets[u+1].
        items: (E,) int64 item rows (1..n_items-1; 0 is the OOV row).
        actions: (E,) int64 action rows (0 = no action).
        ts: (E,) float64 unix seconds, non-decreasing within each user.
        vocab: item / action vocabulary (rows ↔ external ids).
    """

    users: tuple[str, ...]
    offsets: NDArray[np.int64]
    items: NDArray[np.int64]
    actions: NDArray[np.int64]
    ts: NDArray[np.float64]
    vocab: Vocabulary

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_events(self) -> int:
        return int(self.items.shape[0])

    @property
    def lengths(self) -> NDArray[np.int64]:
        """(U,) events per user."""
        return np.diff(self.offsets)

    def span(self, u: int) -> slice:
        """The slice of user u's events in the flat arrays."""
        return slice(int(self.offsets[u]), int(self.offsets[u + 1]))

    def subset(self, user_rows: Sequence[int] | NDArray[np.int64]) -> Interactions:
        """The same log restricted to the users at ``user_rows`` (vocabulary unchanged)."""
        idx = np.asarray(user_rows, dtype=np.int64)
        spans = [np.arange(self.offsets[u], self.offsets[u + 1]) for u in idx]
        flat = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum([len(s) for s in spans]))).astype(np.int64)
        return Interactions(
            users=tuple(self.users[u] for u in idx),
            offsets=offsets,
            items=self.items[flat],
            actions=self.actions[flat],
            ts=self.ts[flat],
            vocab=self.vocab,
        )

    def with_vocabulary(self, vocab: Vocabulary) -> Interactions:
        """The same events with rows of another vocabulary (unknown ids → row 0)."""
        items = np.array([0] + [vocab.item_row(i) for i in self.vocab.items], dtype=np.int64)
        acts = np.array([0] + [vocab.action_row(a) for a in self.vocab.actions], dtype=np.int64)
        return Interactions(
            self.users, self.offsets, items[self.items], acts[self.actions], self.ts, vocab
        )


_INTEGER = re.compile(r"-?[0-9]+")


def _id_order(ids: Iterable[str]) -> list[str]:
    """Distinct ids sorted numerically when they all are integers, else lexicographically."""
    distinct = set(ids)
    if all(_INTEGER.fullmatch(s) for s in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def build_interactions(
    users: Sequence[str],
    items: Sequence[str],
    ts: NDArray[np.float64],
    actions: Sequence[str] | None = None,
    *,
    sort: bool = False,
) -> Interactions:
    """Group raw events by user. Events must be time-ordered per user unless ``sort``.

    Raises DatasetError naming the first user whose timestamps decrease (when not ``sort``).
    """
    n = len(users)
    if not (len(items) == n == ts.shape[0]) or (actions is not None and len(actions) != n):
        raise DatasetError("columns have different lengths")
    if n == 0:
        raise DatasetError("the log holds no events")
    user_ids, user_idx = np.unique(np.asarray(users, dtype=object).astype(str), return_inverse=True)
    if not sort:
        order = np.argsort(user_idx, kind="stable")
        bad = np.flatnonzero((np.diff(ts[order]) < 0) & (np.diff(user_idx[order]) == 0))
        if bad.size:
            row = int(order[bad[0] + 1])
            raise DatasetError(
                f"timestamps are not sorted for user {str(user_ids[user_idx[row]])!r} "
                f"(data row {row + 1}): "
                "sort the file by (user, timestamp) or pass sort=True / --sort"
            )
    order = np.lexsort((ts, user_idx))  # by user, then time; stable for ties
    item_vocab = _id_order(items)
    action_vocab = _id_order(a for a in actions if a) if actions is not None else []
    vocab = Vocabulary(tuple(item_vocab), tuple(action_vocab))
    item_rows = np.array([vocab.item_row(s) for s in items], dtype=np.int64)
    action_rows = (
        np.array([vocab.action_row(a) for a in actions], dtype=np.int64)
        if actions is not None
        else np.zeros(n, dtype=np.int64)
    )
    counts = np.bincount(user_idx, minlength=len(user_ids))
    return Interactions(
        users=tuple(str(u) for u in user_ids),
        offsets=np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
        items=item_rows[order],
        actions=action_rows[order],
        ts=ts[order].astype(np.float64),
        vocab=vocab,
    )
