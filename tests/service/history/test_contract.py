"""The ``HistoryStore`` contract, identical on every implementation: contiguous, idempotent,
batched, all-or-nothing appends; reads by sequence number; delete."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import numpy as np
import pytest

from service.errors import InvalidUserId
from service.history.base import HistoryChunk, HistoryGap, HistorySlice, HistoryStore
from service.history.memory import MemoryHistory
from service.history.postgres import PostgresHistory
from service.store.eventlog import RECORD_SIZE, LogFormatError, decode_log, make_records

pytestmark = pytest.mark.anyio

IMPLEMENTATIONS = ["memory", "postgres"]
_tables = itertools.count()


@pytest.fixture(params=IMPLEMENTATIONS)
async def history(request: pytest.FixtureRequest) -> AsyncIterator[HistoryStore]:
    created: HistoryStore
    if request.param == "memory":
        created = MemoryHistory()
    else:  # a fresh table per test in the session's private PostgreSQL
        url: str = request.getfixturevalue("postgres_url")
        created = await PostgresHistory.open(url, table=f"history_{next(_tables)}", pool_size=2)
    yield created
    await created.close()


def recs(first: int, last: int, *, salt: int = 0) -> bytes:
    """Records of seqs first..last: ts = seq + salt/1000, item seq, an event id per seq."""
    seqs = range(first, last + 1)
    return make_records(
        [s + salt / 1000 for s in seqs],
        list(seqs),
        ["click" if s % 3 else None for s in seqs],
        [f"e{s}" if s % 2 else None for s in seqs],
    ).tobytes()


def seqs_of(blob: bytes) -> list[int]:
    return [int(t) for t in decode_log(blob)["ts"]]


async def test_unknown_user_is_empty(history: HistoryStore) -> None:
    assert await history.last_seq("nobody") == 0
    assert await history.read("nobody") == HistorySlice(b"", 0, 1)
    assert await history.read("nobody", after_seq=5) == HistorySlice(b"", 5, 6)
    await history.delete("nobody")
    await history.ping()


async def test_append_then_read_bytes_exactly(history: HistoryStore) -> None:
    rng = np.random.default_rng(0)
    blob = rng.integers(0, 256, 37 * RECORD_SIZE, dtype=np.uint8).tobytes()  # any bytes
    await history.append([HistoryChunk("u", 1, blob)])
    assert await history.last_seq("u") == 37
    assert await history.read("u") == HistorySlice(blob, 37, 1)
    tail = await history.read("u", after_seq=30)
    assert tail == HistorySlice(blob[30 * RECORD_SIZE :], 37, 31)
    assert tail.events == 7
    assert await history.read("u", after_seq=37) == HistorySlice(b"", 37, 38)
    assert await history.read("u", after_seq=50) == HistorySlice(b"", 50, 51)


async def test_many_appends_concatenate_in_order(history: HistoryStore) -> None:
    seq = 0
    for size in [1, 5, 64, 3, 500, 2, 1000, 7]:
        await history.append([HistoryChunk("u", seq + 1, recs(seq + 1, seq + size))])
        seq += size
    whole = await history.read("u")
    assert seqs_of(whole.records) == list(range(1, seq + 1))
    assert whole.records == recs(1, seq)
    for after in [0, 1, 5, 69, 70, 571, seq - 1, seq]:
        part = await history.read("u", after_seq=after)
        assert part == HistorySlice(recs(after + 1, seq), seq, after + 1)


async def test_resending_is_idempotent_and_the_first_write_wins(history: HistoryStore) -> None:
    await history.append([HistoryChunk("u", 1, recs(1, 10))])
    await history.append([HistoryChunk("u", 1, recs(1, 10, salt=1))])  # same seqs again
    await history.append([HistoryChunk("u", 4, recs(4, 6, salt=1))])  # inside what is stored
    assert (await history.read("u")).records == recs(1, 10)
    # a partly re-sent chunk: 6..10 are stored already, only 11..15 are new
    await history.append([HistoryChunk("u", 6, recs(6, 15, salt=1))])
    assert await history.last_seq("u") == 15
    assert (await history.read("u")).records == recs(1, 10) + recs(11, 15, salt=1)


async def test_one_call_appends_for_many_users(history: HistoryStore) -> None:
    await history.append([HistoryChunk("a", 1, recs(1, 3))])
    await history.append(
        [
            HistoryChunk("b", 1, recs(1, 50)),
            HistoryChunk("a", 4, recs(4, 9)),
            HistoryChunk("c", 1, recs(1, 1)),
            HistoryChunk("a", 2, recs(2, 5)),  # overlaps stored and in-call data
        ]
    )
    assert (await history.read("a")).records == recs(1, 9)
    assert await history.last_seq("b") == 50
    assert (await history.read("c")) == HistorySlice(recs(1, 1), 1, 1)


async def test_chunks_of_one_user_may_come_in_any_order(history: HistoryStore) -> None:
    await history.append(
        [
            HistoryChunk("u", 11, recs(11, 20)),
            HistoryChunk("u", 1, recs(1, 10)),
            HistoryChunk("u", 21, recs(21, 21)),
        ]
    )
    assert (await history.read("u")).records == recs(1, 21)


async def test_a_gap_is_refused_and_nothing_of_the_call_is_stored(history: HistoryStore) -> None:
    await history.append([HistoryChunk("u", 1, recs(1, 5))])
    with pytest.raises(HistoryGap, match="seq 1..5.*seq 7"):
        await history.append([HistoryChunk("v", 1, recs(1, 4)), HistoryChunk("u", 7, recs(7, 9))])
    assert await history.last_seq("v") == 0
    assert await history.last_seq("u") == 5
    with pytest.raises(HistoryGap):  # a new user starts at seq 1
        await history.append([HistoryChunk("w", 2, recs(2, 3))])
    with pytest.raises(HistoryGap):  # a hole between two chunks of one call
        await history.append([HistoryChunk("u", 6, recs(6, 7)), HistoryChunk("u", 9, recs(9, 9))])
    assert (await history.read("u")).records == recs(1, 5)


@pytest.mark.parametrize(
    ("chunk", "error"),
    [
        (HistoryChunk("bad id", 1, recs(1, 1)), InvalidUserId),
        (HistoryChunk("", 1, recs(1, 1)), InvalidUserId),
        (HistoryChunk("u", 1, recs(1, 2)[:-1]), LogFormatError),
        (HistoryChunk("u", 0, recs(0, 1)), ValueError),
    ],
)
async def test_malformed_chunks_store_nothing(
    history: HistoryStore, chunk: HistoryChunk, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await history.append([HistoryChunk("ok", 1, recs(1, 2)), chunk])
    assert await history.last_seq("ok") == 0


async def test_empty_chunks_and_calls_store_nothing(history: HistoryStore) -> None:
    await history.append([])
    await history.append([HistoryChunk("u", 1, b""), HistoryChunk("u", 9, b"")])
    assert await history.last_seq("u") == 0


async def test_reads_validate_the_user_id(history: HistoryStore) -> None:
    with pytest.raises(InvalidUserId):
        await history.read("a b")
    with pytest.raises(InvalidUserId):
        await history.last_seq("x" * 129)


async def test_delete_forgets_one_user(history: HistoryStore) -> None:
    await history.append([HistoryChunk("u", 1, recs(1, 8)), HistoryChunk("v", 1, recs(1, 2))])
    await history.delete("u")
    assert await history.read("u") == HistorySlice(b"", 0, 1)
    assert await history.last_seq("v") == 2
    await history.append([HistoryChunk("u", 1, recs(1, 3, salt=2))])
    assert (await history.read("u")).records == recs(1, 3, salt=2)


async def test_users_pages_through_every_user_with_a_history(history: HistoryStore) -> None:
    names = [f"u{i:03d}" for i in range(25)]
    await history.append([HistoryChunk(u, 1, recs(1, 2)) for u in names])
    await history.delete("u007")
    pages, after = [], ""
    while page := await history.users(after=after, limit=10):
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [10, 10, 4]
    assert [u for p in pages for u in p] == [u for u in names if u != "u007"]
