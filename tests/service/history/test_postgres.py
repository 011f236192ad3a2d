"""PostgresHistory beyond the contract: the tier stopped like a crash under appends, killed
connections, concurrent writers of one user, corrupt rows, the disk cost per event."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import numpy as np
import psycopg
import pytest

from service.errors import HistoryUnavailable
from service.history import statements
from service.history.base import HistoryChunk, HistoryCorrupt, HistoryGap, HistorySlice
from service.history.codec import FORMAT, RAW, encode_segment
from service.history.pool import ConnectionPool
from service.history.postgres import PostgresHistory
from service.store.eventlog import make_records
from solar_tools.postgres_server import PostgresServer
from solar_tools.redis_server import free_port
from tests.service.support import until

pytestmark = pytest.mark.anyio
_tables = itertools.count()


@pytest.fixture
async def history(postgres_url: str) -> AsyncIterator[PostgresHistory]:
    created = await PostgresHistory.open(
        postgres_url,
        table=f"faults_{next(_tables)}",
        pool_size=2,
        timeout_s=1.0,
        retries=0,
        compact_after=0,  # compaction only where a test asks for it
    )
    yield created
    await created.close()


def recs(first: int, last: int, *, seed: int = 0) -> bytes:
    """Events first..last of a user: ms timestamps, Zipf items, three actions, event ids."""
    rng = np.random.default_rng([seed, first])
    n = last - first + 1
    ts = np.round(1.7e9 + first * 60 + np.cumsum(rng.exponential(60, n)), 3)
    items = (rng.zipf(1.3, n) % 20_000).tolist()
    actions = [("view", "click", "buy")[a] for a in rng.integers(0, 3, n)]
    ids = [f"{seed}-{s}" for s in range(first, last + 1)]
    return make_records(ts, items, actions, ids).tobytes()


async def test_stopped_tier_raises_unavailable_and_loses_nothing_acknowledged(
    history: PostgresHistory, postgres_server: PostgresServer
) -> None:
    users = [f"u{k}" for k in range(20)]
    acked = dict.fromkeys(users, 0)
    outcomes: list[str] = []
    done = asyncio.Event()

    async def writer() -> None:  # a client that retries the same chunks until acknowledged
        while not done.is_set():
            chunks = [
                HistoryChunk(u, acked[u] + 1, recs(acked[u] + 1, acked[u] + 10)) for u in users
            ]
            try:
                await history.append(chunks)
            except HistoryUnavailable:
                outcomes.append("unavailable")
                await asyncio.sleep(0.05)
                continue
            outcomes.append("ok")
            for u in users:
                acked[u] += 10

    task = asyncio.create_task(writer())
    try:
        await until(lambda: outcomes.count("ok") >= 5, timeout_s=60)
        await asyncio.to_thread(postgres_server.stop, "immediate")  # a crash: no checkpoint
        await until(lambda: "unavailable" in outcomes, timeout_s=60)
        await asyncio.to_thread(postgres_server.start)  # WAL recovery
        await until(lambda: outcomes[-5:] == ["ok"] * 5, timeout_s=60)
    finally:
        done.set()
        await task
    assert set(outcomes) == {"ok", "unavailable"}
    for u in users:  # every acknowledged event is there, byte for byte, and nothing else
        stored = await history.read(u)
        assert stored.last_seq == acked[u]
        assert stored.records == b"".join(recs(s, s + 9) for s in range(1, acked[u], 10))


async def test_a_killed_connection_is_one_503_then_replaced(
    history: PostgresHistory, postgres_url: str
) -> None:
    await history.append([HistoryChunk("u", 1, recs(1, 5))])
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'solar-history'"
        )
    with pytest.raises(HistoryUnavailable, match="postgresql (append|read) at"):
        for _ in range(3):  # the pool may hold two connections: one of them was killed
            await history.read("u")
    await history.append([HistoryChunk("u", 6, recs(6, 9))])
    assert (await history.read("u")).records == recs(1, 5) + recs(6, 9)


async def test_a_paused_tier_times_out_as_unavailable(
    history: PostgresHistory, postgres_server: PostgresServer
) -> None:
    await history.ping()
    await asyncio.to_thread(postgres_server.stop, "fast")
    with pytest.raises(HistoryUnavailable):
        await history.append([HistoryChunk("u", 1, recs(1, 2))])
    with pytest.raises(HistoryUnavailable):
        await history.ping()
    await asyncio.to_thread(postgres_server.start)
    await history.append([HistoryChunk("u", 1, recs(1, 2))])
    assert await history.last_seq("u") == 2


async def test_concurrent_writers_of_one_user_store_each_seq_once(postgres_url: str) -> None:
    table = f"concurrent_{next(_tables)}"
    a, b = [await PostgresHistory.open(postgres_url, table=table, pool_size=2) for _ in "ab"]
    try:

        async def resend(history: PostgresHistory) -> None:  # two serves re-sending one stream
            for first in range(1, 400, 20):
                await history.append([HistoryChunk("u", first, recs(first, first + 19))])

        await asyncio.gather(resend(a), resend(b), resend(a))
        whole = await b.read("u")
        assert whole.last_seq == 400
        assert whole.records == b"".join(recs(f, f + 19) for f in range(1, 400, 20))
    finally:
        await a.close()
        await b.close()


async def test_a_corrupt_segment_is_refused_not_crashed_on(
    history: PostgresHistory, postgres_url: str
) -> None:
    await history.append([HistoryChunk("u", 1, recs(1, 5)), HistoryChunk("v", 1, recs(1, 5))])
    await history.append([HistoryChunk("u", 6, recs(6, 8))])
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            f"UPDATE {history.table_name} SET data = '\\x01dead' "
            "WHERE user_id = 'u' AND last_seq = 8"
        )
    with pytest.raises(HistoryCorrupt, match="'u' is corrupt: segment 6..8"):
        await history.read("u")
    assert (await history.read("u", after_seq=8)).records == b""  # what follows is readable
    assert (await history.read("v")).records == recs(1, 5)  # other users are unaffected


async def test_stored_bytes_per_event_are_under_16(
    history: PostgresHistory, postgres_url: str
) -> None:
    users, events, body = 20, 5_000, 1_000
    for first in range(1, events, body):
        await history.append(
            [
                HistoryChunk(f"user-{k}", first, recs(first, first + body - 1, seed=k))
                for k in range(users)
            ]
        )
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        row = admin.execute("SELECT pg_total_relation_size(%s)", (history.table_name,)).fetchone()
    assert row is not None
    per_event = row[0] / (users * events)
    assert 8 < per_event <= 16, per_event


async def test_compaction_merges_small_segments_and_keeps_every_byte(
    history: PostgresHistory, postgres_url: str
) -> None:
    sizes = [20, 20, 5, 3000, 20, 20, 20, 1, 2100, 7]  # 3000 and 2100: full segments (≥ 2048)
    seq = 0
    for size in sizes:
        await history.append([HistoryChunk("u", seq + 1, recs(seq + 1, seq + size))])
        seq += size
    await history.append([HistoryChunk("u", seq - 3, recs(seq - 3, seq + 10))])  # a re-send
    seq += 10
    before = await history.read("u")
    removed = await history.compact("u")
    assert removed == 2 + 3 + 1  # 20+20+5 → 1; 20+20+20+1 → 1; 7 and its re-send → 1
    assert await history.read("u") == before
    assert await history.read("u", after_seq=3050) == HistorySlice(
        before.records[3050 * 20 :], seq, 3051
    )
    assert await history.compact("u") == 0
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        rows = admin.execute(
            f"SELECT first_seq, last_seq FROM {history.table_name} ORDER BY last_seq"
        ).fetchall()
    assert rows == [(1, 45), (46, 3045), (3046, 3106), (3107, 5206), (5207, 5223)]


async def test_small_appends_are_compacted_in_the_background(postgres_url: str) -> None:
    history = await PostgresHistory.open(
        postgres_url, table=f"auto_{next(_tables)}", compact_after=40, segment_events=100
    )
    try:
        for first in range(1, 200, 10):  # 20 appends of 10 events
            await history.append([HistoryChunk("u", first, recs(first, first + 9))])
            await asyncio.sleep(0.01)
        for _ in range(100):  # the background task catches up
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                count = admin.execute(f"SELECT count(*) FROM {history.table_name}").fetchone()
            if count is not None and count[0] <= 6:
                break
            await asyncio.sleep(0.05)
        assert count is not None and count[0] <= 6, count  # not 20
        expected = b"".join(recs(f, f + 9) for f in range(1, 200, 10))
        assert (await history.read("u")).records == expected
    finally:
        await history.close()


async def test_an_append_waits_for_a_concurrent_writer_of_the_user(
    history: PostgresHistory, postgres_url: str
) -> None:
    """Another process holds the user's lock while it stores seqs 1..20: an append of 21..40
    waits for its commit and then sees those seqs (no false gap)."""
    async with await psycopg.AsyncConnection.connect(postgres_url) as other:
        await other.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('u', %s))", (statements.LOCK_SEED,)
        )
        await other.execute(
            f"INSERT INTO {history.table_name} (user_id, last_seq, first_seq, data) "
            "VALUES ('u', 20, 1, %s)",
            (encode_segment(recs(1, 20)),),
        )
        append = asyncio.create_task(history.append([HistoryChunk("u", 21, recs(21, 40))]))
        await asyncio.sleep(0.3)
        assert not append.done()  # waiting for the lock
        await other.commit()
        await asyncio.wait_for(append, 5)
    assert (await history.read("u")).records == recs(1, 20) + recs(21, 40)


async def test_small_appends_are_plain_until_compacted(
    history: PostgresHistory, postgres_url: str
) -> None:
    await history.append([HistoryChunk("u", 1, recs(1, 20)), HistoryChunk("v", 1, recs(1, 300))])

    def formats() -> dict[str, int]:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            rows = admin.execute(
                f"SELECT user_id, get_byte(data, 0) FROM {history.table_name}"
            ).fetchall()
        return dict(rows)

    assert formats() == {"u": RAW, "v": FORMAT}  # 300 events: encoded at once
    assert await history.compact("u") == 0  # one plain segment → one compact segment
    assert formats() == {"u": FORMAT, "v": FORMAT}
    assert (await history.read("u")).records == recs(1, 20)
    assert await history.compact("v") == 0 and await history.compact("u") == 0


async def test_one_compaction_call_serves_many_users(history: PostgresHistory) -> None:
    for first in (1, 11, 21):
        chunks = [
            HistoryChunk(u, first, recs(first, first + 9, seed=k)) for k, u in enumerate("abc")
        ]
        await history.append(chunks)
    await history.append([HistoryChunk("d", 1, recs(1, 400))])  # compact already
    assert await history.compact("a", "b", "c", "d", "nobody", "a") == 3 * 2
    for k, u in enumerate("abc"):
        expected = b"".join(recs(f, f + 9, seed=k) for f in (1, 11, 21))
        assert (await history.read(u)).records == expected
    assert (await history.read("d")).records == recs(1, 400)


class RecordingObserver:
    def __init__(self) -> None:
        self.ops: list[str] = []
        self.errors: list[str] = []
        self.compactions: list[tuple[int, int]] = []

    def op_seconds(self, op: str, seconds: float) -> None:
        assert seconds >= 0
        self.ops.append(op)

    def error(self, kind: str) -> None:
        self.errors.append(kind)

    def compacted(self, segments: int, events: int) -> None:
        self.compactions.append((segments, events))


async def test_operations_errors_and_compactions_are_reported(postgres_url: str) -> None:
    """What `solar_history_seconds{op}`, `solar_history_errors_total{kind}` and the
    compaction counters are fed with."""
    observer = RecordingObserver()
    history = await PostgresHistory.open(
        postgres_url, table=f"observed_{next(_tables)}", compact_after=0, observer=observer
    )
    try:
        for first in (1, 11, 21):
            await history.append([HistoryChunk("u", first, recs(first, first + 9))])
        with pytest.raises(HistoryGap):
            await history.append([HistoryChunk("u", 40, recs(40, 41))])
        assert await history.compact("u") == 2
        assert observer.compactions == [(2, 30)]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"UPDATE {history.table_name} SET data = '\\x01dead'")
        with pytest.raises(HistoryCorrupt):
            await history.read("u")
        assert observer.ops.count("append") == 4 and observer.ops[-2:] == ["compact", "read"]
        assert observer.errors == ["gap", "corrupt"]
    finally:
        await history.close()
    down = PostgresHistory(
        ConnectionPool(f"postgresql://postgres@127.0.0.1:{free_port()}/x", size=1, timeout_s=1),
        postgres_url,
        schema="solar",
        table="down",
        timeout_s=1.0,
        segment_events=100,
        compact_after=0,
        compact_idle_s=1.0,
        observer=observer,
    )
    with pytest.raises(HistoryUnavailable):
        await down.last_seq("u")
    await down.close()
    assert observer.errors[-1] == "unavailable" and observer.ops[-1] == "last_seq"
