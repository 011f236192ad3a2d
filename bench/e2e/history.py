"""Durable history benchmark (issue 19): bytes per event on disk and appends acknowledged/s.

    .venv/bin/python -m bench.e2e.history            # prints a Markdown summary (~2-4 min)
    .venv/bin/python -m bench.e2e.history --quick    # small sizes, a smoke run

On a private PostgreSQL 15 (initdb on a free port, ``fsync`` on as in production, deleted at
the end), with synthetic histories like /ingest's: ms timestamps, Zipf items over a 50,000
catalogue, three actions, an event id on every event.

1. Bytes per event at 100 / 1 k / 10 k / 100 k events per user: ``pg_total_relation_size``
   (heap, TOAST, indexes) of a fresh table holding ~``--events`` events of such users, /
   events. Appended as /ingest batches them (``--body``-event bodies over ``--spread``
   users: ``body/spread`` events per user per append): without compaction, with the
   default background compaction (after 4 small appends of a user), and after ``compact``
   of every user; each after ``VACUUM FULL`` (the live size; without FULL, PostgreSQL keeps
   the pages compaction freed for its next inserts).
2. Append throughput: bodies of ``--body`` events over ``--spread`` users, events/s
   acknowledged, and until every user is compacted too (the background compactions, then
   the idle tails compacted at once instead of after ``compact_idle_s``), with 1 and 4
   concurrent appenders; the embedded ``MemoryHistory`` beside it in
   the same run. The machine is shared: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

import numpy as np
import psycopg

from bench.common.harness import postgres_history
from service.history.base import HistoryChunk, HistoryStore
from service.history.memory import MemoryHistory
from service.history.postgres import PostgresHistory
from service.store.eventlog import RECORD_SIZE, make_records

ACTIONS = ("view", "click", "buy")


def user_events(user: int, n: int) -> bytes:
    """n records of one synthetic user, oldest first (20·n bytes)."""
    rng = np.random.default_rng(user)
    ts = np.round(1.7e9 + np.cumsum(rng.exponential(60.0, n)), 3)
    items = (rng.zipf(1.2, n) % 50_000).tolist()
    actions = [ACTIONS[a] for a in rng.integers(0, 3, n)]
    ids = [f"ev-{user}-{i}" for i in range(n)]
    return make_records(ts, items, actions, ids).tobytes()


def ingest_batches(histories: Sequence[bytes], body: int, spread: int) -> list[list[HistoryChunk]]:
    """The append calls that /ingest bodies of ``body`` events over ``spread`` users make:
    each user's next ``body // spread`` events, ``spread`` users per call, until all sent."""
    per_user = max(1, body // spread)
    sent = [0] * len(histories)
    batches: list[list[HistoryChunk]] = []
    pending = [u for u in range(len(histories)) if histories[u]]
    while pending:
        for start in range(0, len(pending), spread):
            batch = []
            for u in pending[start : start + spread]:
                data = histories[u][sent[u] * RECORD_SIZE : (sent[u] + per_user) * RECORD_SIZE]
                batch.append(HistoryChunk(f"user-{u}", sent[u] + 1, data))
                sent[u] += len(data) // RECORD_SIZE
            batches.append(batch)
        pending = [u for u in pending if sent[u] * RECORD_SIZE < len(histories[u])]
    return batches


def relation_bytes(url: str, table: str, *, vacuum_full: bool = False) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        if vacuum_full:
            conn.execute(f"VACUUM FULL {table}")
        row = conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
    assert row is not None
    return int(row[0])


async def bytes_per_event(url: str, per_user: int, total: int, body: int, spread: int) -> str:
    """One table row: B/event as appended, with the default background compaction, and
    after compacting every user."""
    users = max(1, total // per_user)
    histories = [user_events(u, per_user) for u in range(users)]
    events = users * per_user
    figures = []
    for compact_after in (0, 1_024):  # off, and the default
        table = f"size_{per_user}_{compact_after}"
        history = await PostgresHistory.open(url, table=table, compact_after=compact_after)
        try:
            for batch in ingest_batches(histories, body, spread):
                await history.append(batch)
            await asyncio.wait_for(history.compacted(), 120)
            figures.append(relation_bytes(url, history.table_name, vacuum_full=True) / events)
            if compact_after:
                for u in range(users):
                    await history.compact(f"user-{u}")
                figures.append(relation_bytes(url, history.table_name, vacuum_full=True) / events)
            whole = await history.read("user-0")
            assert whole.records == histories[0], "the history does not read back"
        finally:
            await history.close()
    return f"| {per_user:,} | {users:,} | " + " | ".join(f"{f:.2f}" for f in figures) + " |"


async def throughput(
    history: HistoryStore, batches: list[list[HistoryChunk]], conc: int
) -> tuple[float, float]:
    """Events/s appending ``batches`` with ``conc`` concurrent appenders: acknowledged, and
    until the background compactions they queued are done too."""
    queue = list(reversed(batches))
    events = sum(len(c.records) for b in batches for c in b) // RECORD_SIZE

    async def appender() -> None:
        while queue:
            await history.append(queue.pop())

    start = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(conc)))
    acknowledged = time.perf_counter() - start
    if isinstance(history, PostgresHistory):  # the queued compactions, then every tail
        users = sorted({c.user_id for b in batches for c in b})
        for first in range(0, len(users), 64):
            await history.compact(*users[first : first + 64])
        await history.compacted(tails=False)  # every tail compacted just above
    return events / acknowledged, events / (time.perf_counter() - start)


async def append_rates(url: str, total: int, body: int, spread: int) -> list[str]:
    per_user = max(1, total // (4 * spread))  # 4·spread users, the calls interleave them
    histories = [user_events(10_000 + u, per_user) for u in range(4 * spread)]
    rows = []
    for conc in (1, 4):
        batches = ingest_batches(histories, body, spread)
        memory, _ = await throughput(MemoryHistory(), batches, conc)
        postgres = await PostgresHistory.open(
            url, table=f"rate_{conc}", pool_size=4, compact_idle_s=3_600.0
        )
        try:
            acked, compacted = await throughput(postgres, batches, conc)
        finally:
            await postgres.close()
        rows.append(f"| {conc} | {acked:,.0f} | {compacted:,.0f} | {memory:,.0f} |")
    return rows


async def run(args: argparse.Namespace) -> None:
    with postgres_history() as url:
        sizes = (100, 1_000, 10_000) if args.quick else (100, 1_000, 10_000, 100_000)
        print(
            f"Bytes per event on disk (PostgreSQL 15, pg_total_relation_size; ~{args.events:,} "
            f"events per row, appended in {args.body:,}-event bodies over {args.spread} users)\n"
        )
        print(
            "| events per user | users | B/event as appended (no compaction) | "
            "B/event, background compaction (default) | B/event, every user compacted |"
        )
        print("| --- | --- | --- | --- | --- |")
        for per_user in sizes:
            print(await bytes_per_event(url, per_user, args.events, args.body, args.spread))
        print(
            f"\nAppends acknowledged, events/s ({args.rate_events:,} events in {args.body:,}-event "
            f"bodies over {args.spread} users per append; fsync on)\n"
        )
        print(
            "| concurrent appenders | PostgreSQL, acknowledged | PostgreSQL, until every "
            "user is compacted | embedded (MemoryHistory) |"
        )
        print("| --- | --- | --- | --- |")
        for row in await append_rates(url, args.rate_events, args.body, args.spread):
            print(row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per size row")
    parser.add_argument("--rate-events", type=int, default=200_000, help="events appended")
    parser.add_argument("--body", type=int, default=1_000, help="events per /ingest body")
    parser.add_argument("--spread", type=int, default=50, help="users per /ingest body")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rate_events = min(args.events, 20_000), min(args.rate_events, 20_000)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
