"""The production history tier: PostgreSQL, one row per compressed segment of a user's events.

Why PostgreSQL: platform teams already run, back up, replicate and monitor it (it runs on
these machines); a transaction makes a batched append all-or-nothing and idempotent, so a
serve process can re-send after a crash; one pool of a few connections per process carries
every user. Why segments: a row per event costs more than its 20 bytes in row header alone
(a heap tuple header is 23 B), while a segment row of n events costs ~70 B of row and index
overhead once; its ``data`` is ``codec.encode_segment``'s columnar, deflated blob (about
11-14 B per event with event ids), so the tier stays under 16 B per event on disk
(``python -m bench.e2e.history`` measures it with ``pg_total_relation_size``).

``append`` is one round trip (a pipeline: BEGIN, the users' advisory locks, one
``INSERT … SELECT FROM unnest`` that stores the chunks that end after what is stored, or
nothing when one would leave a gap, COMMIT; ``statements``). An append stores one segment
per user; a small one (an /ingest body spread over many users gives ~20 events per user) is
stored plain, 20 B per event, because encoding it would cost more CPU than the rest of the
append; once a user has ``compact_after`` events in small appends this process merges the
user's small segments in the background (``compact``: size-tiered, into compact segments of
up to ``segment_events`` events). Connection failures and timeouts raise
``HistoryUnavailable`` (503, safe to retry).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from service.errors import HistoryUnavailable
from service.history import statements
from service.history.base import (
    HistoryChunk,
    HistoryCorrupt,
    HistoryGap,
    HistoryObserver,
    HistorySlice,
    normalize_chunks,
)
from service.history.codec import encode_segment
from service.history.compaction import BackgroundCompactor
from service.history.pool import ConnectionPool
from service.history.segments import SegmentRow, plan_compaction, stitch
from service.store.eventlog import RECORD_SIZE
from service.store.keys import validate_user_id

__all__ = ["PostgresHistory", "redact_url"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError, OSError)
# Runs shorter than this are appended plain (the codec's fixed cost per segment is too high
# on the ingest path) and compacted later; longer ones are encoded at once.
_COMPACT_BYTES = 256 * RECORD_SIZE


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs and error messages)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _identifier(name: str) -> sql.Identifier:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid PostgreSQL identifier {name!r}: expected [a-z_][a-z0-9_]*")
    return sql.Identifier(name)


class PostgresHistory:
    """``HistoryStore`` on PostgreSQL; build it with :meth:`open`."""

    def __init__(
        self,
        pool: ConnectionPool,
        url: str,
        *,
        schema: str,
        table: str,
        timeout_s: float,
        segment_events: int,
        compact_after: int,
        compact_idle_s: float,
        observer: HistoryObserver | None = None,
    ) -> None:
        self._pool = pool
        self._observer = observer
        self._url = redact_url(url)
        self._timeout_s = timeout_s
        self._schema = _identifier(schema)
        _identifier(table)
        self._table = sql.Identifier(schema, table)
        self.table_name = f"{schema}.{table}"
        self.segment_events = segment_events
        self._compactor = BackgroundCompactor(
            self.compact, after=compact_after, idle_s=compact_idle_s
        )

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
        segment_events: int = 2_048,
        compact_after: int = 1_024,
        compact_idle_s: float = 10.0,
        observer: HistoryObserver | None = None,
    ) -> PostgresHistory:
        """Connect (with ``retries`` retries, the delay doubling from ``backoff_s``) and
        create the schema and table if absent.

        Args:
            segment_events: events per segment that compaction aims at.
            compact_after: events appended for a user in small segments before this process
                compacts them (0: never on its own; ``compact`` still works).
            compact_idle_s: a user with fewer small appends is compacted this long after its
                last one.
            observer: receives op latencies, errors and compaction counts (metrics).

        Raises:
            HistoryUnavailable: PostgreSQL did not answer within the retries.
        """
        pool = ConnectionPool(url, size=pool_size, timeout_s=timeout_s)
        history = cls(
            pool,
            url,
            schema=schema,
            table=table,
            timeout_s=timeout_s,
            segment_events=segment_events,
            compact_after=compact_after,
            compact_idle_s=compact_idle_s,
            observer=observer,
        )
        for attempt in range(retries + 1):
            try:
                await history._run("create schema", history._create_schema)
                return history
            except HistoryUnavailable:
                if attempt == retries:
                    await history.close()
                    raise
                await asyncio.sleep(backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def _sql(self, text: str, **extra: sql.Composable) -> sql.Composed:
        return sql.SQL(text).format(table=self._table, **extra)

    async def _create_schema(self, conn: psycopg.AsyncConnection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (statements.LOCK_SEED,))
            cursor = await conn.execute("SELECT to_regclass(%s)", (self._table.as_string(conn),))
            row = await cursor.fetchone()
            if row is None or row[0] is None:
                await conn.execute(self._sql(statements.CREATE, schema=self._schema))

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

        start = time.perf_counter()
        try:
            async with self._translated(op):
                return await asyncio.wait_for(use(), self._timeout_s)
        except HistoryUnavailable:
            self._error("unavailable")
            raise
        except HistoryCorrupt:
            self._error("corrupt")
            raise
        finally:
            if self._observer is not None:
                self._observer.op_seconds(op, time.perf_counter() - start)

    def _error(self, kind: str) -> None:
        if self._observer is not None:
            self._observer.error(kind)

    async def append(self, chunks: Sequence[HistoryChunk]) -> None:
        runs = normalize_chunks(chunks)
        if not runs:
            return
        users = [run.user_id for run in runs]
        params: dict[str, list[Any]] = {
            "users": users,
            "firsts": [run.first_seq for run in runs],
            "lasts": [run.last_seq for run in runs],
            "data": [
                encode_segment(run.records, compact=len(run.records) >= _COMPACT_BYTES)
                for run in runs
            ],
        }
        lock = self._sql(statements.LOCK, seed=sql.Literal(statements.LOCK_SEED))

        async def store(conn: psycopg.AsyncConnection) -> list[tuple[str, int, int]]:
            async with conn.pipeline(), conn.transaction():
                await conn.execute(lock, (users,))
                cursor = await conn.execute(self._sql(statements.APPEND), params, binary=True)
            return await cursor.fetchall()

        gaps = await self._run("append", store)
        if gaps:
            user_id, first_seq, stored = gaps[0]
            self._error("gap")
            raise HistoryGap(user_id, first_seq, stored)
        limit = self.segment_events * RECORD_SIZE
        self._compactor.note(
            [
                (run.user_id, len(run.records) // RECORD_SIZE)
                for run in runs
                if len(run.records) < limit
            ]
        )

    async def read(self, user_id: str, *, after_seq: int = 0) -> HistorySlice:
        validate_user_id(user_id)
        after_seq = max(after_seq, 0)

        async def fetch(conn: psycopg.AsyncConnection) -> list[SegmentRow]:
            query = self._sql(statements.READ)
            cursor = await conn.execute(query, (user_id, after_seq), binary=True)
            return [SegmentRow(*row) for row in await cursor.fetchall()]

        rows = await self._run("read", fetch)
        try:
            return stitch(user_id, rows, after_seq)
        except HistoryCorrupt:
            self._error("corrupt")
            raise

    async def last_seq(self, user_id: str) -> int:
        validate_user_id(user_id)

        async def fetch(conn: psycopg.AsyncConnection) -> int:
            cursor = await conn.execute(self._sql(statements.LAST_SEQ), (user_id,))
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])

        return await self._run("last_seq", fetch)

    async def users(self, *, after: str = "", limit: int = 1_000) -> list[str]:
        async def fetch(conn: psycopg.AsyncConnection) -> list[str]:
            cursor = await conn.execute(self._sql(statements.USERS), (after, limit))
            return [str(row[0]) for row in await cursor.fetchall()]

        return await self._run("users", fetch)

    async def delete(self, user_id: str) -> None:
        validate_user_id(user_id)

        async def remove(conn: psycopg.AsyncConnection) -> None:
            await conn.execute(self._sql(statements.DELETE), (user_id,))

        await self._run("delete", remove)
        self._compactor.forget([user_id])

    async def compact(self, *user_ids: str) -> int:
        """Merge each user's adjacent small segments (< ``segment_events`` events) into
        compact segments of ``segment_events``; returns the number of segments removed.

        One transaction (one commit to wait for) under the users' locks: readers see the old
        or the new segments.

        Raises:
            HistoryUnavailable: the tier is down (nothing changed).
            HistoryCorrupt: a small segment does not decode (nothing changed).
        """
        users = sorted({validate_user_id(user_id) for user_id in user_ids})
        lock = self._sql(statements.LOCK, seed=sql.Literal(statements.LOCK_SEED))

        async def merge(conn: psycopg.AsyncConnection) -> tuple[int, int]:
            async with conn.transaction():
                await conn.execute(lock, (users,))
                query = self._sql(statements.SMALL_SEGMENTS)
                cursor = await conn.execute(query, (users, self.segment_events), binary=True)
                by_user: dict[str, list[SegmentRow]] = {}
                for user_id, *row in await cursor.fetchall():
                    by_user.setdefault(user_id, []).append(SegmentRow(*row))
                plans = [
                    plan_compaction(u, rows, self.segment_events) for u, rows in by_user.items()
                ]
                gone = [
                    (u, last)
                    for u, plan in zip(by_user, plans, strict=True)
                    for last in plan.remove
                ]
                runs = [run for plan in plans for run in plan.add]
                if not gone:
                    return 0, 0
                removed = ([u for u, _ in gone], [last for _, last in gone])
                await conn.execute(self._sql(statements.REMOVE), removed)
                add = (
                    [run.user_id for run in runs],
                    [run.last_seq for run in runs],
                    [run.first_seq for run in runs],
                    [encode_segment(run.records) for run in runs],
                )
                await conn.execute(self._sql(statements.INSERT), add, binary=True)
                return len(gone) - len(runs), sum(len(r.records) for r in runs) // RECORD_SIZE

        removed, events = await self._run("compact", merge) if users else (0, 0)
        self._compactor.forget(users)
        if self._observer is not None and removed:
            self._observer.compacted(removed, events)
        return removed

    async def compacted(self, *, tails: bool = True) -> None:
        """Wait until the background compactions queued so far are done and, with ``tails``,
        those of the idle users' tails too (``BackgroundCompactor.idle``)."""
        await self._compactor.idle(tails=tails)

    async def ping(self) -> None:
        async def select(conn: psycopg.AsyncConnection) -> None:
            await conn.execute("SELECT 1")

        await self._run("ping", select)

    async def close(self) -> None:
        await self._compactor.close()
        await self._pool.close()
