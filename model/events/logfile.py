"""Interaction log files (CSV, TSV, Parquet) → :class:`Interactions`, whatever their columns
are called and however their times are written.

A log has one event per row: a user, an item, a time and optionally an action (or a rating,
which becomes actions "r1".."r5"). Columns are found by their usual names (``user_id``,
``item_id``, ``timestamp``...) or named explicitly with a mapping such as
``{"user": "customer_id", "item": "sku", "ts": "event_time"}`` (``--columns
user=customer_id,item=sku,ts=event_time`` on the command line, see :func:`parse_columns`).

Times become unix seconds (float64): numbers as they are, ISO 8601 strings
(``2024-05-01T12:00:00Z``, ``2024-05-01 12:00:00+02:00``, ``2024-05-01``) and datetimes
(Parquet ``timestamp`` / ``date`` columns) converted; a time without a zone is taken as UTC.
Every error is a :class:`DatasetError` naming the file, and the column and row where one is
at fault. Parquet needs the optional pyarrow (``pip install 'solar[parquet]'``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from model.events.interactions import DatasetError, Interactions, build_interactions

__all__ = ["COLUMN_ROLES", "load_log", "parse_columns", "unix_seconds"]

# Role → the column names looked for when the mapping does not name one (first match wins).
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "user", "userid"),
    "item": ("item_id", "item", "itemid"),
    "ts": ("timestamp", "ts", "time"),
    "action": ("action",),
}
COLUMN_ROLES = tuple(DEFAULT_COLUMNS)
RATING_COLUMNS = ("rating",)
PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_HINT = "reading Parquet needs pyarrow: pip install 'solar[parquet]'"
_TIME_HELP = "unix seconds, an ISO 8601 time such as 2024-05-01T12:00:00Z, or a datetime"


def parse_columns(spec: str) -> dict[str, str]:
    """``"user=customer_id,item=sku,ts=event_time[,action=kind]"`` → role → column name.

    Raises:
        DatasetError: a part without ``=``, an unknown role, a role given twice or an empty
            column name.
    """
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        role, sep, column = (s.strip() for s in part.partition("="))
        if not sep or not column:
            raise DatasetError(f"--columns: {part!r} is not ROLE=COLUMN (e.g. user=customer_id)")
        if role not in DEFAULT_COLUMNS:
            raise DatasetError(f"--columns: unknown role {role!r}; roles are {COLUMN_ROLES}")
        if role in mapping:
            raise DatasetError(f"--columns: {role} is given twice")
        mapping[role] = column
    if not mapping:
        raise DatasetError("--columns is empty; e.g. user=customer_id,item=sku,ts=event_time")
    return mapping


def _normal(name: str) -> str:
    """A header name as matched: RecBole's ``:type`` suffix dropped, trimmed, lower-cased."""
    return name.split(":")[0].strip().lower()


def _column(header: list[str], role: str, columns: Mapping[str, str], path: Path) -> int | None:
    """Index of the role's column; None for an absent optional one (action)."""
    if role in columns:
        wanted = _normal(columns[role])
        if wanted not in header:
            raise DatasetError(
                f"{path}: no column {columns[role]!r} (--columns {role}={columns[role]}); "
                f"the columns are {header}"
            )
        return header.index(wanted)
    index = next((i for i, col in enumerate(header) if col in DEFAULT_COLUMNS[role]), None)
    if index is None and role != "action":
        raise DatasetError(
            f"{path}: missing the {role} column: expected one of {DEFAULT_COLUMNS[role]} or "
            f"--columns {role}=NAME; the columns are {header}"
        )
    return index


def _as_seconds(value: object) -> float | None:
    """One time value in unix seconds, None when it is not a time."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        if text.endswith(("Z", "z")):  # Python < 3.11 reads no "Z" suffix
            text = text[:-1] + "+00:00"
        try:
            return _as_seconds(datetime.fromisoformat(text))
        except ValueError:
            return None
    return None


def unix_seconds(values: Sequence[object], path: Path, column: str) -> NDArray[np.float64]:
    """(E,) float64 unix seconds of a time column; see the module docstring for the forms.

    Raises:
        DatasetError: naming the file, the column and the first data row (1-based) whose value
            is empty, not a time, or not finite.
    """
    where = f"{path}: column {column!r}"
    try:  # the common case, numbers or numeric strings: one vectorised conversion
        ts = np.asarray(values, dtype=np.float64)  # (E,); None becomes NaN, caught below
    except (TypeError, ValueError):
        converted = [_as_seconds(v) for v in values]
        bad = next((i for i, s in enumerate(converted) if s is None), None)
        if bad is not None:
            raise DatasetError(
                f"{where}, data row {bad + 1}: cannot read {values[bad]!r} as a time ({_TIME_HELP})"
            ) from None
        ts = np.asarray(converted, dtype=np.float64)
    if ts.ndim != 1:
        raise DatasetError(f"{where} does not hold one time per row")
    finite = np.isfinite(ts)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        if values[bad] is None:
            raise DatasetError(f"{where}, data row {bad + 1}: cannot read None as a time")
        raise DatasetError(f"{where}, data row {bad + 1}: {values[bad]!r} is not a finite time")
    return ts


def _ids(values: Sequence[object], path: Path, column: str) -> list[str]:
    """User or item ids as strings; an empty value is an error naming its row."""
    ids = ["" if v is None else str(v) for v in values]
    bad = next((i for i, v in enumerate(ids) if not v.strip()), None)
    if bad is not None:
        raise DatasetError(f"{path}: column {column!r}, data row {bad + 1}: empty id")
    return ids


def _read_parquet(path: Path) -> tuple[list[str], list[list[object]]]:
    """Header and columns (Python values: numbers, strings, datetimes) of a Parquet file."""
    try:
        import pyarrow.parquet as pq  # the optional `parquet` extra
    except ImportError as exc:
        raise DatasetError(f"{path}: {PARQUET_HINT}") from exc
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DatasetError(f"{path}: not a readable Parquet file ({exc})") from exc
    return [_normal(c) for c in table.column_names], [c.to_pylist() for c in table.columns]


def _read_text(path: Path) -> tuple[list[str], list[list[object]]]:
    """Header and columns of a CSV (``.csv``) or TSV file (anything else)."""
    with path.open(newline="", encoding="utf-8") as f:
        # TSV fields (e.g. MovieLens titles) may hold quote characters: no quoting there.
        if path.suffix == ".csv":
            reader = csv.reader(f, delimiter=",", quoting=csv.QUOTE_MINIMAL)
        else:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = [_normal(h) for h in next(reader)]
            rows = [row for row in reader if row]
        except StopIteration:
            raise DatasetError(f"{path}: empty file (no header line, no events)") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"{path}: not a readable UTF-8 CSV/TSV file ({exc})") from exc
    bad = next((i for i, row in enumerate(rows) if len(row) != len(header)), None)
    if bad is not None:
        raise DatasetError(
            f"{path}: data row {bad + 1} has {len(rows[bad])} fields, the header {len(header)}"
        )
    return header, [list(col) for col in zip(*rows, strict=True)] if rows else []


def _rating_action(value: object) -> str:
    try:
        rating = float(str(value))
    except ValueError:
        return f"r{value}"
    return f"r{int(rating)}" if math.isfinite(rating) and rating == int(rating) else f"r{value}"


def _actions(
    header: list[str], data: list[list[object]], column: int | None, rating_as_action: bool
) -> list[str] | None:
    """Action names per event (empty: none) from the action column, else from a rating."""
    if column is not None:
        return ["" if v is None else str(v) for v in data[column]]
    rating = next((header.index(c) for c in RATING_COLUMNS if c in header), None)
    if rating_as_action and rating is not None:
        return [_rating_action(v) for v in data[rating]]
    return None


def load_log(
    path: str | Path,
    *,
    sort: bool = False,
    rating_as_action: bool = True,
    columns: Mapping[str, str] | None = None,
) -> Interactions:
    """Load an interaction log: CSV (``.csv``), Parquet (``.parquet``, ``.pq``) or TSV (any
    other suffix, e.g. RecBole's ``.inter``).

    Args:
        path: the file.
        sort: sort each user's events by time (else they must already be in time order).
        rating_as_action: without an action column, a ``rating`` column gives actions "r<k>".
        columns: role (``user``, ``item``, ``ts``, ``action``) → column name, for columns not
            called by the usual names; header names match case-insensitively.

    Raises:
        DatasetError: missing file or column, empty file, unreadable time or id, ragged row,
            Parquet without pyarrow; the message names the file (and column, row).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")
    columns = dict(columns or {})
    unknown = set(columns) - set(COLUMN_ROLES)
    if unknown:
        raise DatasetError(f"unknown column roles {sorted(unknown)}; roles are {COLUMN_ROLES}")
    reader = _read_parquet if path.suffix.lower() in PARQUET_SUFFIXES else _read_text
    header, data = reader(path)
    cu, ci, ct, ca = (_column(header, role, columns, path) for role in COLUMN_ROLES)
    assert cu is not None and ci is not None and ct is not None  # required: raised otherwise
    if not data or not data[0]:
        raise DatasetError(f"{path}: empty file (a header, no events)")
    return build_interactions(
        _ids(data[cu], path, header[cu]),
        _ids(data[ci], path, header[ci]),
        unix_seconds(data[ct], path, header[ct]),
        _actions(header, data, ca, rating_as_action),
        sort=sort,
    )
