"""The production history tier: PostgreSQL, one row per compressed segment of a user's events.

Why PostgreSQL: platform teams already run, back up, replicate and monitor it (it runs on
these machines); a transaction makes a batched append all-or-nothing and idempotent, so a
serve process can re-send after a crash; one pool of a few connections per process carries
every user. Why segments: a row per event costs more than its 20 bytes in row header alone
(a heap tuple header is 23 B), while a segment row of n events costs ~100 B of row and index
overhead once; its ``data`` is ``codec.encode_segment``'s columnar, deflated blob (about
11-14 B per event with event ids), so the tier stays under 16 B per event on disk
(``bench/history.py`` measures it with ``pg_total_relation_size``).

Table ``{schema}.{table}``: ``(user_id text, last_seq bigint, first_seq bigint, data
bytea)``, primary key ``(user_id, last_seq)``, created at start-up if absent. A segment holds
the events ``first_seq..last_seq``; segments of a user may overlap only after a partial
re-send (the earlier segment wins: ``read`` walks them in ``last_seq`` order and skips seqs it
already has). ``compact`` rewrites a user's small tail segments as one.

``append`` is one round trip (a pipeline: BEGIN, per-user advisory locks in a fixed order so
concurrent writers of one user serialise without deadlock, one ``INSERT … SELECT FROM unnest``
that stores the chunks that end after what is stored, or nothing when one would leave a gap,
COMMIT). Connection failures and timeouts raise ``HistoryUnavailable`` (503, safe to retry).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from service.errors import HistoryUnavailable
from service.history.base import (
    HistoryChunk,
    HistoryCorrupt,
    HistoryGap,
    HistorySlice,
    normalize_chunks,
)
from service.history.codec import SegmentFormatError, decode_segment, encode_segment
from service.history.pool import ConnectionPool
from service.store.eventlog import RECORD_SIZE
from service.store.keys import validate_user_id

__all__ = ["PostgresHistory", "redact_url"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LOCK_SEED = 19  # advisory-lock namespace of the history (hashtextextended's seed)
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError, OSError)

_SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE {table} (
    user_id text NOT NULL,
    last_seq bigint NOT NULL,
    first_seq bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (user_id, last_seq)
);
-- segments are deflated already: no second (pglz) compression attempt when TOASTed
ALTER TABLE {table} ALTER COLUMN data SET STORAGE EXTERNAL;
"""

_LOCK_SQL = """
SELECT pg_advisory_xact_lock(k)
FROM (SELECT DISTINCT hashtextextended(u, {seed}) AS k FROM unnest(%s::text[]) AS u) AS keys
ORDER BY k
"""

# Each input row with the user's stored last seq; the INSERT (a data-modifying CTE, always
# run) stores the rows that end after it unless some row starts after it + 1 (a gap); the
# gapped rows are returned.
_APPEND_SQL = """
WITH input AS (
    SELECT i.user_id, i.first_seq, i.last_seq, i.data,
           coalesce((SELECT max(s.last_seq) FROM {table} AS s WHERE s.user_id = i.user_id), 0)
               AS stored
    FROM unnest(%(users)s::text[], %(firsts)s::bigint[], %(lasts)s::bigint[],
                %(data)s::bytea[]) AS i(user_id, first_seq, last_seq, data)
), gaps AS (
    SELECT user_id, first_seq, stored FROM input WHERE first_seq > stored + 1
), stored_rows AS (
    INSERT INTO {table} (user_id, last_seq, first_seq, data)
    SELECT user_id, last_seq, first_seq, data FROM input
    WHERE last_seq > stored AND NOT EXISTS (SELECT 1 FROM gaps)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT user_id, first_seq, stored FROM gaps
"""


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs and error messages)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _identifier(name: str) -> sql.Identifier:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid PostgreSQL identifier {name!r}: expected [a-z_][a-z0-9_]*")
    return sql.Identifier(name)


class PostgresHistory:
    """``HistoryStore`` on PostgreSQL; build it with :meth:`open`."""

    def __init__(self, pool: ConnectionPool, url: str, schema: str, table: str, timeout_s: float):
        self._pool = pool
        self._url = redact_url(url)
        self._timeout_s = timeout_s
        self._schema = _identifier(schema)
        self._table = sql.Identifier(schema, table)
        _identifier(table)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        schema: str = "solar",
        table: str = "history_segments",
        pool_size: int = 4,
        timeout_s: float = 2.0,
        retries: int = 5,
        backoff_s: float = 0.2,
    ) -> PostgresHistory:
        """Connect (with ``retries`` retries, the delay doubling from ``backoff_s``) and
        create the schema and table if absent.

        Raises:
            HistoryUnavailable: PostgreSQL did not answer within the retries.
        """
        pool = ConnectionPool(url, size=pool_size, timeout_s=timeout_s)
        history = cls(pool, url, schema, table, timeout_s)
        for attempt in range(retries + 1):
            try:
                await history._create_schema()
                return history
            except HistoryUnavailable:
                if attempt == retries:
                    await history.close()
                    raise
                await asyncio.sleep(backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    async def _create_schema(self) -> None:
        async def create(conn: psycopg.AsyncConnection) -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_SEED,))
                exists = await conn.execute(
                    "SELECT to_regclass(%s)", (self._table.as_string(conn),)
                )
                row = await exists.fetchone()
                if row is None or row[0] is None:
                    script = sql.SQL(_SCHEMA_SQL).format(schema=self._schema, table=self._table)
                    await conn.execute(script)

        await self._run("create schema", create)

    @asynccontextmanager
    async def _translated(self, op: str) -> AsyncIterator[None]:
        try:
            yield
        except _UNAVAILABLE as exc:
            raise HistoryUnavailable(
                f"postgresql {op} at {self._url} failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def _run(self, op: str, body: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        """``body`` on a pooled connection within ``timeout_s``; failures → HistoryUnavailable."""

        async def use() -> T:
            async with self._pool.connection() as conn:
                return await body(conn)

        async with self._translated(op):
            return await asyncio.wait_for(use(), self._timeout_s)

    async def append(self, chunks: Sequence[HistoryChunk]) -> None:
        runs = normalize_chunks(chunks)
        if not runs:
            return
        params: dict[str, list[Any]] = {
            "users": [run.user_id for run in runs],
            "firsts": [run.first_seq for run in runs],
            "lasts": [run.last_seq for run in runs],
            "data": [encode_segment(run.records) for run in runs],
        }
        users = params["users"]
        query = sql.SQL(_APPEND_SQL).format(table=self._table)
        lock = sql.SQL(_LOCK_SQL).format(seed=sql.Literal(_LOCK_SEED))

        async def store(conn: psycopg.AsyncConnection) -> list[tuple[str, int, int]]:
            async with conn.pipeline(), conn.transaction():
                await conn.execute(lock, (users,))
                cursor = await conn.execute(query, params, binary=True)
            return await cursor.fetchall()

        gaps = await self._run("append", store)
        if gaps:
            user_id, first_seq, stored = gaps[0]
            raise HistoryGap(user_id, first_seq, stored)

    async def read(self, user_id: str, *, after_seq: int = 0) -> HistorySlice:
        validate_user_id(user_id)
        after_seq = max(after_seq, 0)
        query = sql.SQL(
            "SELECT first_seq, last_seq, data FROM {table} "
            "WHERE user_id = %s AND last_seq > %s ORDER BY last_seq"
        ).format(table=self._table)

        async def fetch(conn: psycopg.AsyncConnection) -> list[tuple[int, int, bytes]]:
            cursor = await conn.execute(query, (user_id, after_seq), binary=True)
            return await cursor.fetchall()

        rows = await self._run("read", fetch)
        return _stitch(user_id, rows, after_seq)

    async def last_seq(self, user_id: str) -> int:
        validate_user_id(user_id)
        query = sql.SQL("SELECT coalesce(max(last_seq), 0) FROM {table} WHERE user_id = %s")

        async def fetch(conn: psycopg.AsyncConnection) -> int:
            cursor = await conn.execute(query.format(table=self._table), (user_id,))
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])

        return await self._run("last_seq", fetch)

    async def delete(self, user_id: str) -> None:
        validate_user_id(user_id)
        query = sql.SQL("DELETE FROM {table} WHERE user_id = %s").format(table=self._table)

        async def remove(conn: psycopg.AsyncConnection) -> None:
            await conn.execute(query, (user_id,))

        await self._run("delete", remove)

    async def ping(self) -> None:
        async def select(conn: psycopg.AsyncConnection) -> None:
            await conn.execute("SELECT 1")

        await self._run("ping", select)

    async def close(self) -> None:
        await self._pool.close()


def _stitch(user_id: str, rows: Sequence[tuple[int, int, bytes]], after_seq: int) -> HistorySlice:
    """Join segments (ordered by last seq) into the records after ``after_seq``.

    Raises:
        HistoryCorrupt: a segment does not decode, or seqs are missing between two.
    """
    have, parts = after_seq, []
    for first_seq, last_seq, data in rows:
        if last_seq <= have:
            continue
        if first_seq > have + 1:
            raise HistoryCorrupt(user_id, f"seqs {have + 1}..{first_seq - 1} are missing")
        try:
            records = decode_segment(bytes(data))
        except SegmentFormatError as exc:
            raise HistoryCorrupt(user_id, f"segment {first_seq}..{last_seq}: {exc}") from exc
        if len(records) != (last_seq - first_seq + 1) * RECORD_SIZE:
            raise HistoryCorrupt(user_id, f"segment {first_seq}..{last_seq} has wrong length")
        parts.append(records[(have + 1 - first_seq) * RECORD_SIZE :])
        have = last_seq
    return HistorySlice(b"".join(parts), have, after_seq + 1)
