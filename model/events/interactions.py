"""Interaction logs in a compact per-user layout, and loaders for CSV / TSV / Parquet files.

A log holds events (user, item, timestamp, optional action). :class:`Interactions` keeps
them grouped by user and sorted by time (CSR layout: ``offsets`` into flat arrays), with
items and actions already mapped to embedding rows of a :class:`Vocabulary`.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from model.checkpoint import Vocabulary

USER_COLUMNS = ("user_id", "user", "userid")
ITEM_COLUMNS = ("item_id", "item", "itemid")
TIME_COLUMNS = ("timestamp", "ts", "time")
ACTION_COLUMNS = ("action",)
RATING_COLUMNS = ("rating",)


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


def _find(header: list[str], names: tuple[str, ...]) -> int | None:
    return next((i for i, col in enumerate(header) if col in names), None)


def _require(header: list[str], names: tuple[str, ...], path: Path) -> int:
    index = _find(header, names)
    if index is None:
        raise DatasetError(f"{path}: missing column, expected one of {names}; header is {header}")
    return index


def _parse_ts(values: list[str], path: Path) -> NDArray[np.float64]:
    try:
        ts = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError as exc:
        raise DatasetError(f"{path}: non-numeric timestamp ({exc})") from exc
    if not np.all(np.isfinite(ts)):
        raise DatasetError(f"{path}: timestamps must be finite numbers")
    return ts


def _rating_action(value: str) -> str:
    rating = float(value)
    return f"r{int(rating)}" if math.isfinite(rating) and rating == int(rating) else f"r{value}"


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header (type suffixes like ':token' stripped, lower-cased) and rows of a text/Parquet log."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # optional dependency, imported only for Parquet
        except ImportError as exc:
            raise DatasetError("reading Parquet needs pyarrow (pip install pyarrow)") from exc
        table = pq.read_table(path)
        columns = [[str(v) for v in col.to_pylist()] for col in table.columns]
        return [c.lower() for c in table.column_names], [
            list(r) for r in zip(*columns, strict=True)
        ]
    is_csv = path.suffix == ".csv"
    with path.open(newline="", encoding="utf-8") as f:
        # TSV fields (e.g. MovieLens titles) may hold quote characters: no quoting there.
        if is_csv:
            reader = csv.reader(f, delimiter=",", quoting=csv.QUOTE_MINIMAL)
        else:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = [h.split(":")[0].strip().lower() for h in next(reader)]
        except StopIteration as exc:
            raise DatasetError(f"{path}: empty file") from exc
        rows = [row for row in reader if row]
    return header, rows


def load_log(
    path: str | Path, *, sort: bool = False, rating_as_action: bool = True
) -> Interactions:
    """Load an interaction log: CSV (``.csv``), TSV (``.tsv``, ``.inter``, others) or Parquet.

    Columns (header names, case-insensitive, RecBole ``:type`` suffixes ignored): user
    (user_id|user), item (item_id|item), timestamp (timestamp|ts|time, unix seconds),
    optional action; without one, a rating column becomes actions "r1".."r5" when
    ``rating_as_action``. Events must be time-ordered per user unless ``sort``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")
    header, rows = _read_rows(path)
    cu = _require(header, USER_COLUMNS, path)
    ci = _require(header, ITEM_COLUMNS, path)
    ct = _require(header, TIME_COLUMNS, path)
    ca = _find(header, ACTION_COLUMNS)
    cr = _find(header, RATING_COLUMNS) if rating_as_action else None
    if any(len(row) != len(header) for row in rows):
        bad = next(i for i, row in enumerate(rows) if len(row) != len(header))
        raise DatasetError(f"{path}: row {bad + 2} has {len(rows[bad])} fields, not {len(header)}")
    actions: list[str] | None = None
    if ca is not None:
        actions = [row[ca] for row in rows]
    elif cr is not None:
        actions = [_rating_action(row[cr]) for row in rows]
    return build_interactions(
        [row[cu] for row in rows],
        [row[ci] for row in rows],
        _parse_ts([row[ct] for row in rows], path),
        actions,
        sort=sort,
    )
