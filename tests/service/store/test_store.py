"""Store semantics, identical on the embedded store, a real Redis and a real Redis Cluster:
dedup within the window, the capped log, positions, the fenced commit, delete as a fence."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import numpy as np
import pytest

from service.errors import InvalidUserId
from service.store.base import AppendRequest, LogSlice, Store, UserPosition
from service.store.eventlog import (
    RECORD_SIZE,
    LogFormatError,
    decode_log,
    identity_keys,
    make_records,
)
from service.store.memory import MemoryStore
from service.store.redis_client import connect_redis
from service.store.redis_store import CHUNK_RECORDS, RedisStore

pytestmark = pytest.mark.anyio


class RecordingObserver:
    def __init__(self) -> None:
        self.ops: list[str] = []
        self.conflicts = 0

    def op_seconds(self, op: str, seconds: float) -> None:
        assert seconds >= 0
        self.ops.append(op)

    def conflict(self) -> None:
        self.conflicts += 1


def events(*ids: int, with_event_id: bool = True) -> tuple[bytes, bytes]:
    """(records, identities) of one event per id: ts = item = id, event id "e<id>"."""
    recs = make_records(
        [float(i) for i in ids],
        list(ids),
        [None] * len(ids),
        [f"e{i}" if with_event_id else None for i in ids],
    )
    return recs.tobytes(), identity_keys(recs)


def ts_of(blob: bytes) -> list[float]:
    return decode_log(blob)["ts"].tolist()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    observer = RecordingObserver()
    if request.param == "memory":
        created: Store = MemoryStore(observer=observer)
    else:
        url: str = request.getfixturevalue(
            "redis_url" if request.param == "redis" else "cluster_url"
        )
        created = RedisStore(await connect_redis(url), url, observer=observer)
    yield created
    await created.close()


async def append(store: Store, *ids: int, cap: int = 100, window: int = 10_000) -> tuple[int, ...]:
    recs, idents = events(*ids)
    result = await store.append_events("u", recs, idents, log_cap=cap, dedup_window=window)
    return tuple(result)


async def test_unknown_user(store: Store) -> None:
    assert await store.get_state("nobody") is None
    assert await store.position("nobody") == UserPosition(0, 0)
    assert await store.read_log("nobody", unapplied_only=False) == LogSlice(None, 0, 0, 0, 0, b"")
    assert await store.delete("nobody") is False


async def test_append_numbers_events_and_drops_duplicates(store: Store) -> None:
    assert await append(store, 1, 2, 3) == (3, 0, 3, 0)
    assert await append(store, 3, 4, 4, 5) == (2, 2, 5, 0)  # 3 seen before, 4 twice here
    snapshot = await store.read_log("u", unapplied_only=False)
    assert ts_of(snapshot.records) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert (snapshot.seq, snapshot.applied, snapshot.length) == (5, 0, 5)
    assert await store.position("u") == UserPosition(5, 0)


async def test_identity_without_event_id_is_the_whole_event(store: Store) -> None:
    recs, idents = events(1, 2, with_event_id=False)
    assert (await store.append_events("u", recs, idents, log_cap=10, dedup_window=10))[:2] == (2, 0)
    assert (await store.append_events("u", recs, idents, log_cap=10, dedup_window=10))[:2] == (0, 2)


async def test_dedup_looks_back_exactly_the_window(store: Store) -> None:
    await append(store, *range(1, 11), window=4)
    assert (await append(store, 6, window=4))[:2] == (1, 0)  # the last 4 are 7..10
    assert (await append(store, 9, 10, window=4))[:2] == (0, 2)  # now 8..11 (11 = the new 6)
    assert (await append(store, 7, window=4))[:2] == (1, 0)


async def test_the_log_keeps_its_last_cap_records_across_chunks(store: Store) -> None:
    n = 3 * CHUNK_RECORDS + 17
    for start in range(1, n + 1, 100):
        await append(store, *range(start, min(start + 100, n + 1)), cap=CHUNK_RECORDS + 5)
    snapshot = await store.read_log("u", unapplied_only=False)
    assert snapshot.length == CHUNK_RECORDS + 5 and snapshot.seq == n
    assert ts_of(snapshot.records) == [float(i) for i in range(n - CHUNK_RECORDS - 4, n + 1)]


async def test_unapplied_records_and_the_fenced_commit(
    store: Store, request: pytest.FixtureRequest
) -> None:
    await append(store, 1, 2, 3)
    first = await store.read_log("u", unapplied_only=True)
    assert ts_of(first.records) == [1.0, 2.0, 3.0] and not first.truncated
    assert await store.commit_state("u", b"S3", gen=0, expected_applied=0, applied=3)
    assert await store.get_state("u") == b"S3"
    await append(store, 4, 5)
    second = await store.read_log("u", unapplied_only=True)
    assert ts_of(second.records) == [4.0, 5.0] and second.state == b"S3"
    # A writer that read before the first commit loses; so does one claiming unseen events.
    assert not await store.commit_state("u", b"late", gen=0, expected_applied=0, applied=3)
    assert not await store.commit_state("u", b"ahead", gen=0, expected_applied=3, applied=9)
    assert await store.get_state("u") == b"S3"
    assert await store.commit_state("u", b"S5", gen=0, expected_applied=3, applied=5)
    assert await store.position("u") == UserPosition(5, 5)
    assert ts_of((await store.read_log("u", unapplied_only=True)).records) == []


async def test_unapplied_events_trimmed_away_are_reported(store: Store) -> None:
    await append(store, *range(1, 21), cap=8)
    snapshot = await store.read_log("u", unapplied_only=True)
    assert snapshot.truncated and snapshot.length == 8
    assert ts_of(snapshot.records) == [float(i) for i in range(13, 21)]


async def test_delete_is_atomic_and_a_late_writer_cannot_resurrect(store: Store) -> None:
    await append(store, 1, 2)
    before = await store.read_log("u", unapplied_only=True)
    assert await store.delete("u") is True
    assert await store.get_state("u") is None
    assert await store.position("u") == UserPosition(2, 2)  # nothing pending any more
    fence = {"gen": before.gen, "expected_applied": before.applied, "applied": before.seq}
    assert not await store.commit_state("u", b"zombie", **fence)
    assert await store.get_state("u") is None
    assert (await store.read_log("u", unapplied_only=False)).records == b""
    # The user comes back as new: its old events are no longer duplicates.
    assert await append(store, 1) == (1, 0, 3, 2)
    after = await store.read_log("u", unapplied_only=True)
    assert ts_of(after.records) == [1.0] and after.gen == before.gen + 1
    assert await store.commit_state("u", b"S", gen=after.gen, expected_applied=2, applied=3)


async def test_users_are_isolated_and_blobs_are_binary_safe(store: Store) -> None:
    blob = bytes(range(256)) * 3
    await append(store, 1)
    recs, idents = events(1)
    await store.append_events("v", recs, idents, log_cap=10, dedup_window=10)
    assert await store.commit_state("v", blob, gen=0, expected_applied=0, applied=1)
    assert await store.get_state("v") == blob and await store.get_state("u") is None


async def test_invalid_arguments_are_rejected_before_any_change(store: Store) -> None:
    recs, idents = events(1, 2)
    with pytest.raises(LogFormatError):
        await store.append_events("u", recs[:-1], idents, log_cap=10, dedup_window=10)
    with pytest.raises(ValueError, match="identity"):
        await store.append_events("u", recs, idents[:-16], log_cap=10, dedup_window=10)
    with pytest.raises(ValueError, match="log_cap"):
        await store.append_events("u", recs, idents, log_cap=0, dedup_window=10)
    for bad in ("", "a}b", "x" * 129):
        with pytest.raises(InvalidUserId):
            await store.get_state(bad)
    assert await store.position("u") == UserPosition(0, 0)


async def test_concurrent_appends_number_every_event_once(store: Store) -> None:
    batches = [list(range(i * 10 + 1, i * 10 + 11)) for i in range(20)]
    results = await asyncio.gather(*(append(store, *b, b[0], cap=1_000) for b in batches))
    assert sum(r[0] for r in results) == 200 and sum(r[1] for r in results) == 20
    seqs = sorted(r[2] for r in results)
    assert seqs[-1] == 200 and len(set(seqs)) == 20
    assert sorted(ts_of((await store.read_log("u", unapplied_only=False)).records)) == [
        float(i) for i in range(1, 201)
    ]


async def test_records_are_20_bytes_and_the_observer_sees_every_op() -> None:
    observer = RecordingObserver()
    store = MemoryStore(observer=observer)
    recs, _ = events(1)
    assert len(recs) == RECORD_SIZE
    await append(store, 1)
    await store.read_log("u", unapplied_only=True)
    assert not await store.commit_state("u", b"S", gen=0, expected_applied=5, applied=1)
    assert observer.ops == ["append", "read_log", "commit"] and observer.conflicts == 1


async def test_redis_key_layout_and_memory(redis_url: str) -> None:
    client = await connect_redis(redis_url)
    store = RedisStore(client, redis_url)
    try:
        await append(store, *range(1, 301))
        keys = sorted(k.decode() for k in await client.keys("*"))
        assert keys == ["solar:{u}:dedup", "solar:{u}:log", "solar:{u}:pos"]
        assert await client.llen("solar:{u}:log") == 2  # 256 + 44 records
        pos = await client.hgetall("solar:{u}:pos")
        assert pos[b"seq"] == b"300" and pos[b"len"] == b"100"  # cap 100
        assert await client.zcard("solar:{u}:dedup") == 300
        assert struct.calcsize("<d") == 8  # records start with the float64 ts
        raw = b"".join(await client.lrange("solar:{u}:log", 0, -1))
        assert decode_log(raw)["ts"][0] == 201.0
        assert np.all(np.diff(decode_log(raw)["ts"]) == 1.0)
    finally:
        await store.close()


async def test_append_batch_equals_appends_one_by_one(store: Store) -> None:
    requests = []
    for user, ids in (("a", (1, 2, 2)), ("b", (3,)), ("a", (2, 4))):
        recs, idents = events(*ids)
        requests.append(AppendRequest(user, recs, idents))
    results = await store.append_batch(requests, log_cap=100, dedup_window=100)
    assert [tuple(r) for r in results] == [(2, 1, 2, 0), (1, 0, 1, 0), (1, 1, 3, 0)]
    assert ts_of((await store.read_log("a", unapplied_only=False)).records) == [1.0, 2.0, 4.0]
    assert await store.append_batch([], log_cap=100, dedup_window=100) == []
