"""Store semantics, identical on the embedded store, a real Redis and a real Redis Cluster:
the dedup ring (duplicates within the window, refused events older than it remembers), the
short tail (kept until durable and applied), positions, the fenced commit, restore, and
delete as a fence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from service.errors import InvalidUserId, StoreBusy
from service.store.base import (
    CHUNK_RECORDS,
    AppendRequest,
    AppendResult,
    LogSlice,
    StateCommit,
    Store,
    UserPosition,
)
from service.store.dedup_ring import BLOCK, DedupRing, digests, ring_size
from service.store.eventlog import (
    RECORD_SIZE,
    LogFormatError,
    decode_log,
    identity_keys,
    make_records,
)
from service.store.memory import MemoryStore
from service.store.redis_client import connect_redis
from service.store.redis_store import RedisStore

pytestmark = pytest.mark.anyio

WINDOW = 100
V1 = "v1"  # the model version of the states written here


class RecordingObserver:
    def __init__(self) -> None:
        self.ops: list[str] = []
        self.conflicts = 0

    def op_seconds(self, op: str, seconds: float) -> None:
        assert seconds >= 0
        self.ops.append(op)

    def conflict(self) -> None:
        self.conflicts += 1


def events(*ids: float, with_event_id: bool = True) -> tuple[bytes, bytes]:
    """(records, digests) of one event per id: ts = item = id, event id "e<id>"."""
    recs = make_records(
        [float(i) for i in ids],
        [int(i) for i in ids],
        [None] * len(ids),
        [f"e{i}" if with_event_id else None for i in ids],
    )
    return recs.tobytes(), digests(identity_keys(recs))


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


async def append(
    store: Store, *ids: float, user: str = "u", window: int = WINDOW, durable: bool = True
) -> AppendResult:
    """Append, then (as /ingest does once the durable tier holds them) mark them durable."""
    recs, digs = events(*ids)
    (result,) = await store.append_batch(
        [AppendRequest(user, recs, digs)], dedup_window=window, create=True
    )
    if durable and not result.repair:
        await store.mark_durable([(user, result.seq)])
    return result


def counts(result: AppendResult) -> tuple[int, int, int, int, int]:
    return result.accepted, result.duplicates, result.refused, result.seq, result.applied


async def test_unknown_user(store: Store) -> None:
    assert await store.get_state("nobody", V1) is None
    assert await store.position("nobody", V1) == UserPosition(0, 0)
    snapshot = await store.read_log("nobody", V1, unapplied_only=False)
    assert snapshot[:6] == LogSlice(None, 0, 0, 0, 0, b"")[:6] and not snapshot.exists
    assert await store.delete("nobody") is False


async def test_append_numbers_events_and_drops_duplicates(store: Store) -> None:
    first = await append(store, 1, 2, 3, durable=False)
    assert counts(first) == (3, 0, 0, 3, 0) and ts_of(first.undurable) == [1.0, 2.0, 3.0]
    # 3 seen before, 4 twice here; 1..3 are not durable yet, so they come back again
    second = await append(store, 3, 4, 4, 5)
    assert counts(second) == (2, 2, 0, 5, 0) and second.durable == 0
    assert ts_of(second.undurable) == [1.0, 2.0, 3.0, 4.0, 5.0]
    snapshot = await store.read_log("u", V1, unapplied_only=False)
    assert ts_of(snapshot.records) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert (snapshot.seq, snapshot.applied, snapshot.durable, snapshot.length) == (5, 0, 5, 5)
    assert await store.position("u", V1) == UserPosition(5, 0)


async def test_a_batch_answers_each_user_as_if_alone(store: Store) -> None:
    """Many users in one call (one script call on a single Redis): counts, positions and
    undurable records per user, in request order, a user twice in order, an unknown user
    refused without touching the others."""
    await append(store, 1, 2, 3, user="a")
    await append(store, 7, user="b", durable=False)
    batch = [
        AppendRequest("a", *events(3, 4)),
        AppendRequest("n", *events(1)),
        AppendRequest("b", *events(7)),
        AppendRequest("a", *events(4, 5)),
    ]
    a1, n, b, a2 = await store.append_batch(batch, dedup_window=WINDOW)
    assert counts(a1) == (1, 1, 0, 4, 0) and ts_of(a1.undurable) == [4.0] and a1.durable == 3
    assert n.unknown and not (a1.unknown or b.unknown or a2.unknown)
    assert counts(b) == (0, 1, 0, 1, 0) and ts_of(b.undurable) == [7.0]  # not durable yet
    assert counts(a2) == (1, 1, 0, 5, 0) and ts_of(a2.undurable) == [4.0, 5.0]
    await store.mark_durable([("a", 5), ("b", 1)])
    snapshot = await store.read_log("a", V1, unapplied_only=False)
    assert ts_of(snapshot.records) == [1.0, 2.0, 3.0, 4.0, 5.0] and snapshot.durable == 5
    assert (await store.read_log("b", V1, unapplied_only=False)).durable == 1
    assert await store.position("n", V1) == UserPosition(0, 0)


async def test_a_batch_of_many_users_keeps_each_users_order(store: Store) -> None:
    """More users than one script call takes (several calls in one pipeline on Redis): every
    user's answer in request order, a user's second request after its first."""
    batch = [AppendRequest(f"u{k}", *events(1, 2)) for k in range(70)]
    batch.append(AppendRequest("u3", *events(2, 3)))
    results = await store.append_batch(batch, dedup_window=WINDOW, create=True)
    assert [counts(r) for r in results[:70]] == [(2, 0, 0, 2, 0)] * 70
    assert counts(results[70]) == (1, 1, 0, 3, 0) and ts_of(results[70].undurable) == [1, 2, 3]
    await store.mark_durable([(f"u{k}", 2) for k in range(70)])
    assert [(await store.read_log(f"u{k}", V1, unapplied_only=False)).durable for k in (0, 69)] == [
        2,
        2,
    ]


async def test_identity_without_event_id_is_the_whole_event(store: Store) -> None:
    recs, digs = events(1, 2, with_event_id=False)
    request = [AppendRequest("u", recs, digs)]
    assert counts((await store.append_batch(request, dedup_window=WINDOW, create=True))[0])[:2] == (
        2,
        0,
    )
    assert counts((await store.append_batch(request, dedup_window=WINDOW, create=True))[0])[:2] == (
        0,
        2,
    )


async def test_dedup_remembers_exactly_the_last_window_events(store: Store) -> None:
    await append(store, *range(1, 2 * WINDOW + 1))
    # the ring holds events 101..200: re-sending any of them is a duplicate
    assert counts(await append(store, *range(101, 201)))[:3] == (0, 100, 0)
    # older ones left the ring: refused (their ts is below the watermark), never stored
    assert counts(await append(store, 1, 50, 99))[:3] == (0, 0, 3)
    # newer events are accepted, and push the oldest out
    assert counts(await append(store, 201.5, 202.5))[:4] == (2, 0, 0, 202)
    assert counts(await append(store, 101))[:3] == (0, 0, 1)


async def test_the_watermark_is_conservative_by_blocks(store: Store) -> None:
    """Overwriting a block's first slot puts the whole block's old maximum behind the
    watermark, so an event older than any evicted one is refused even if it is new."""
    await append(store, *range(1, WINDOW + 1))
    assert counts(await append(store, 1000))[:3] == (1, 0, 0)  # evicts event 1 (block 0)
    new_but_old = 0.5 + BLOCK - 1  # below block 0's old maximum (ts 50)
    assert counts(await append(store, new_but_old))[:3] == (0, 0, 1)
    assert counts(await append(store, 60.5))[:3] == (1, 0, 0)  # block 1 not evicted yet


async def test_the_tail_keeps_what_is_not_durable_or_not_applied(store: Store) -> None:
    n = 3 * CHUNK_RECORDS + 17
    for start in range(1, n + 1, 100):
        await append(store, *range(start, min(start + 100, n + 1)), window=1_000)
    snapshot = await store.read_log("u", V1, unapplied_only=False)
    assert snapshot.length == n and snapshot.seq == n and snapshot.durable == n
    assert ts_of(snapshot.records) == [float(i) for i in range(1, n + 1)]
    assert await store.commit_state("u", V1, b"S", gen=0, expected_applied=0, applied=n - 5)
    snapshot = await store.read_log("u", V1, unapplied_only=False)
    assert snapshot.length == 5 and ts_of(snapshot.records) == [
        float(i) for i in range(n - 4, n + 1)
    ]
    assert await store.commit_state("u", V1, b"S", gen=0, expected_applied=n - 5, applied=n)
    assert (await store.read_log("u", V1, unapplied_only=False)).length == 0


async def test_a_state_never_covers_events_not_yet_durable(store: Store) -> None:
    await append(store, 1, 2, 3, durable=False)
    assert not await store.commit_state("u", V1, b"S", gen=0, expected_applied=0, applied=3)
    await store.mark_durable([("u", 2)])
    assert await store.commit_state("u", V1, b"S", gen=0, expected_applied=0, applied=2)
    snapshot = await store.read_log("u", V1, unapplied_only=False)
    assert ts_of(snapshot.records) == [3.0] and ts_of(snapshot.undurable) == [3.0]


async def test_unapplied_records_and_the_fenced_commit(store: Store) -> None:
    await append(store, 1, 2, 3)
    first = await store.read_log("u", V1, unapplied_only=True)
    assert ts_of(first.records) == [1.0, 2.0, 3.0] and not first.truncated
    assert await store.commit_state("u", V1, b"S3", gen=0, expected_applied=0, applied=3)
    assert await store.get_state("u", V1) == b"S3"
    await append(store, 4, 5)
    second = await store.read_log("u", V1, unapplied_only=True)
    assert ts_of(second.records) == [4.0, 5.0] and second.state == b"S3"
    # A writer that read before the first commit loses; so does one claiming unseen events.
    assert not await store.commit_state("u", V1, b"late", gen=0, expected_applied=0, applied=3)
    assert not await store.commit_state("u", V1, b"ahead", gen=0, expected_applied=3, applied=9)
    assert await store.get_state("u", V1) == b"S3"
    assert await store.commit_state("u", V1, b"S5", gen=0, expected_applied=3, applied=5)
    assert await store.position("u", V1) == UserPosition(5, 5)
    assert ts_of((await store.read_log("u", V1, unapplied_only=True)).records) == []


async def test_restore_rebuilds_the_hot_keys_once(store: Store) -> None:
    await append(store, 1, 2, 3)
    ring = DedupRing.replay(WINDOW, decode_log(events(1, 2, 3, 4)[0]), last_seq=4)
    assert not await store.restore("u", expected_seq=2, seq=4, ring=ring.to_bytes())
    assert await store.restore("u", expected_seq=3, seq=4, ring=ring.to_bytes())
    snapshot = await store.read_log("u", V1, unapplied_only=False)
    assert (snapshot.seq, snapshot.durable, snapshot.length) == (4, 4, 0)
    assert counts(await append(store, 4, 5))[:4] == (1, 1, 0, 5)  # 4 is in the rebuilt ring
    assert await store.restore("v", expected_seq=None, seq=0, ring=DedupRing(WINDOW).to_bytes())


async def test_delete_is_atomic_and_a_late_writer_cannot_resurrect(store: Store) -> None:
    await append(store, 1, 2)
    before = await store.read_log("u", V1, unapplied_only=True)
    assert await store.delete("u") is True
    assert await store.get_state("u", V1) is None
    assert await store.position("u", V1) == UserPosition(0, 0)  # nothing pending any more
    fence = {"gen": before.gen, "expected_applied": before.applied, "applied": before.seq}
    assert not await store.commit_state("u", V1, b"zombie", **fence)
    assert await store.get_state("u", V1) is None
    assert (await store.read_log("u", V1, unapplied_only=False)).records == b""
    # The user comes back as new: its old events are no longer duplicates.
    assert counts(await append(store, 1)) == (1, 0, 0, 1, 0)
    after = await store.read_log("u", V1, unapplied_only=True)
    assert ts_of(after.records) == [1.0] and after.gen == before.gen + 1
    assert await store.commit_state("u", V1, b"S", gen=after.gen, expected_applied=0, applied=1)


# ---- states per model version (docs/DESIGN.md §3, "Rollouts") -----------------------------
V2 = "v2"


async def test_each_version_has_its_own_state_and_fence(store: Store) -> None:
    """Two versions advance from their own covered positions; neither touches the other's."""
    await append(store, 1, 2, 3)
    assert await store.commit_state("u", V1, b"A3", gen=0, expected_applied=0, applied=3)
    assert await store.position("u", V2) == UserPosition(3, 0)  # B has everything pending
    late = await store.read_log("u", V2, unapplied_only=True)
    assert late.state is None and late.applied == 0
    assert ts_of(late.records) == []  # the tail dropped what A applied: B reads the history
    assert late.truncated
    assert await store.commit_state("u", V2, b"B2", gen=0, expected_applied=0, applied=2)
    assert not await store.commit_state("u", V2, b"Bx", gen=0, expected_applied=0, applied=3)
    assert not await store.commit_state("u", V1, b"Ax", gen=0, expected_applied=2, applied=3)
    assert (await store.get_state("u", V1), await store.get_state("u", V2)) == (b"A3", b"B2")
    await append(store, 4)
    snap_a = await store.read_log("u", V1, unapplied_only=True)
    snap_b = await store.read_log("u", V2, unapplied_only=True)
    assert (snap_a.state, snap_a.applied, ts_of(snap_a.records)) == (b"A3", 3, [4.0])
    assert (snap_b.state, snap_b.applied, snap_b.truncated) == (b"B2", 2, True)
    assert await store.commit_state("u", V2, b"B4", gen=0, expected_applied=2, applied=4)
    assert await store.position("u", V1) == UserPosition(4, 3)
    assert await store.position("u", V2) == UserPosition(4, 4)
    # The tail keeps what no version applied yet only while it is not durable.
    assert (await store.read_log("u", None, unapplied_only=False)).length == 0
    assert await store.state_counts() == {V1: 1, V2: 1}


async def test_batched_reads_and_commits_answer_each_user_as_if_alone(store: Store) -> None:
    """``read_logs`` / ``commit_states`` (the applier's one round trip each per batch) give
    what ``read_log`` / ``commit_state`` give user by user; a lost fence fails only its own
    commit, and new states are counted."""
    await append(store, 1, 2, 3, user="a")
    await append(store, 4, 5, user="b")
    assert await store.commit_state("b", V1, b"B1", gen=0, expected_applied=0, applied=1)
    reads = [("a", V1), ("b", V1), ("nobody", V1), ("a", None)]
    batched = await store.read_logs(reads, unapplied_only=True)
    alone = [await store.read_log(u, v, unapplied_only=True) for u, v in reads]
    assert batched == alone
    assert [ts_of(s.records) for s in batched] == [[1.0, 2.0, 3.0], [5.0], [], [1.0, 2.0, 3.0]]
    assert (batched[1].state, batched[2].exists) == (b"B1", False)
    held = await store.commit_states(
        [
            StateCommit("a", V1, b"A3", gen=0, expected_applied=0, applied=3),
            StateCommit("b", V1, b"late", gen=0, expected_applied=0, applied=2),  # read before B1
            StateCommit("b", V2, b"C2", gen=0, expected_applied=0, applied=2),
        ]
    )
    assert held == [True, False, True]
    assert await store.get_state("a", V1) == b"A3"
    assert (await store.get_state("b", V1), await store.get_state("b", V2)) == (b"B1", b"C2")
    assert await store.position("a", V1) == UserPosition(3, 3)
    assert await store.state_counts() == {V1: 2, V2: 1}
    assert (
        await store.commit_states([]) == [] and await store.read_logs([], unapplied_only=True) == []
    )


async def test_batched_scripts_survive_a_flushed_script_cache(redis_url: str) -> None:
    """The batched calls are bare EVALSHAs in one pipeline (no SCRIPT EXISTS first): after a
    Redis restart or SCRIPT FLUSH they load the script and run the whole batch again."""
    client = await connect_redis(redis_url)
    store = RedisStore(client, redis_url)
    try:
        await append(store, 1, 2, user="flushed-a")
        await append(store, 3, user="flushed-b")
        await client.script_flush()
        reads = [("flushed-a", V1), ("flushed-b", V1)]
        got = await store.read_logs(reads, unapplied_only=True)
        assert [ts_of(s.records) for s in got] == [[1.0, 2.0], [3.0]]
        await client.script_flush()
        commits = [
            StateCommit("flushed-a", V1, b"A", gen=0, expected_applied=0, applied=2),
            StateCommit("flushed-b", V1, b"B", gen=0, expected_applied=0, applied=1),
        ]
        assert await store.commit_states(commits) == [True, True]
        assert await store.get_state("flushed-b", V1) == b"B"
    finally:
        for user in ("flushed-a", "flushed-b"):
            await store.delete(user)
        await store.close()


async def test_delete_restore_and_retire_cover_every_version(store: Store) -> None:
    for user in ("u", "w"):
        await append(store, 1, 2, user=user)
        for version in (V1, V2):
            assert await store.commit_state(
                user, version, b"S", gen=0, expected_applied=0, applied=2
            )
    assert await store.retire(V1) == 2
    assert await store.get_state("u", V1) is None and await store.get_state("w", V1) is None
    assert await store.position("u", V1) == UserPosition(2, 0)  # rebuilt from the history
    assert await store.get_state("u", V2) == b"S"
    assert await store.retire(V1) == 0
    assert await store.state_counts() == {V2: 2}
    assert await store.delete("u") is True
    assert await store.get_state("u", V2) is None
    assert await store.state_counts() == {V2: 1}
    # A restore to a shorter history drops the states that cover more than it.
    ring = DedupRing.replay(WINDOW, decode_log(events(1)[0]), last_seq=1)
    assert await store.restore("w", expected_seq=2, seq=1, ring=ring.to_bytes())
    assert await store.get_state("w", V2) is None
    assert await store.position("w", V2) == UserPosition(1, 0)


async def test_a_state_without_its_position_field_is_ignored(store: Store) -> None:
    """A user whose position was lost and re-created: a leftover blob covers unknown events,
    so it reads as no state (built again from the history), never as covering nothing."""
    await append(store, 1, 2)
    assert await store.commit_state("u", V1, b"S", gen=0, expected_applied=0, applied=2)
    assert await store.restore("u", expected_seq=2, seq=2, ring=DedupRing(WINDOW).to_bytes())
    assert (await store.read_log("u", V1, unapplied_only=False)).state == b"S"  # kept: 2 ≤ 2
    if isinstance(store, MemoryStore):
        return  # no way to lose one key of the embedded store
    raw = store._client  # noqa: SLF001 - the test removes one key as an eviction would
    await raw.delete("solar:{u}:pos")
    await append(store, 3)
    snapshot = await store.read_log("u", V1, unapplied_only=False)
    assert snapshot.state is None and snapshot.applied == 0


async def test_users_are_isolated_and_blobs_are_binary_safe(store: Store) -> None:
    blob = bytes(range(256)) * 3
    await append(store, 1)
    await append(store, 1, user="v")
    assert await store.commit_state("v", V1, blob, gen=0, expected_applied=0, applied=1)
    assert await store.get_state("v", V1) == blob and await store.get_state("u", V1) is None


async def test_invalid_arguments_are_rejected_before_any_change(store: Store) -> None:
    recs, digs = events(1, 2)
    with pytest.raises(LogFormatError):
        await store.append_batch(
            [AppendRequest("u", recs[:-1], digs)], dedup_window=WINDOW, create=True
        )
    with pytest.raises(ValueError, match="digest"):
        await store.append_batch(
            [AppendRequest("u", recs, digs[:-8])], dedup_window=WINDOW, create=True
        )
    with pytest.raises(ValueError, match="window"):
        await store.append_batch([AppendRequest("u", recs, digs)], dedup_window=BLOCK + 1)
    for bad in ("", "a}b", "x" * 129):
        with pytest.raises(InvalidUserId):
            await store.get_state(bad, V1)
    assert await store.position("u", V1) == UserPosition(0, 0)


async def test_a_user_without_keys_is_created_only_when_asked(store: Store) -> None:
    recs, digs = events(1)
    (result,) = await store.append_batch([AppendRequest("u", recs, digs)], dedup_window=WINDOW)
    assert result.unknown and result.accepted == 0
    assert await store.position("u", V1) == UserPosition(0, 0)
    assert counts(await append(store, 1)) == (1, 0, 0, 1, 0)
    (again,) = await store.append_batch([AppendRequest("u", *events(2))], dedup_window=WINDOW)
    assert not again.unknown and again.accepted == 1  # known now: no flag needed


async def test_a_late_append_is_refused_whole(store: Store) -> None:
    recs, digs = events(1)
    with pytest.raises(StoreBusy):
        await store.append_batch(
            [AppendRequest("u", recs, digs)], dedup_window=WINDOW, not_after_s=1.0
        )
    assert await store.position("u", V1) == UserPosition(0, 0)


async def test_concurrent_appends_number_every_event_once(store: Store) -> None:
    batches = [list(range(i * 10 + 1, i * 10 + 11)) for i in range(20)]
    results = await asyncio.gather(
        *(append(store, *b, b[0], window=1_000, durable=False) for b in batches)
    )
    assert sum(r.accepted for r in results) == 200 and sum(r.duplicates for r in results) == 20
    seqs = sorted(r.seq for r in results)
    assert seqs[-1] == 200 and len(set(seqs)) == 20
    assert sorted(ts_of((await store.read_log("u", V1, unapplied_only=False)).records)) == [
        float(i) for i in range(1, 201)
    ]


async def test_records_are_20_bytes_and_the_observer_sees_every_op() -> None:
    observer = RecordingObserver()
    store = MemoryStore(observer=observer)
    recs, _ = events(1)
    assert len(recs) == RECORD_SIZE
    await append(store, 1)
    await store.read_log("u", V1, unapplied_only=True)
    assert not await store.commit_state("u", V1, b"S", gen=0, expected_applied=5, applied=1)
    assert observer.ops == ["append_batch", "mark_durable", "read_log", "commit"]
    assert observer.conflicts == 1


async def test_redis_key_layout_and_memory(redis_url: str) -> None:
    client = await connect_redis(redis_url)
    store = RedisStore(client, redis_url)
    try:
        await append(store, *range(1, 301), window=4_000, durable=False)
        keys = sorted(k.decode() for k in await client.keys("*"))
        assert keys == ["solar:{u}:dedup", "solar:{u}:log", "solar:{u}:pos"]
        assert await client.llen("solar:{u}:log") == 2  # 256 + 44 records
        ring = await client.get("solar:{u}:dedup")
        assert (
            len(ring) == ring_size(4_000) and await client.memory_usage("solar:{u}:dedup") < 33_000
        )
        parsed = DedupRing.from_bytes(ring)
        assert parsed.to_bytes() == ring and events(300)[1] in parsed
        await store.mark_durable([("u", 300)])
        assert await store.commit_state("u", V1, b"S", gen=0, expected_applied=0, applied=300)
        assert sorted(k.decode() for k in await client.keys("*")) == [
            "solar:models:states",  # users with a state, per version
            "solar:{u}:dedup",
            "solar:{u}:pos",
            "solar:{u}:state:v1",
        ]
    finally:
        await store.close()


async def test_redis_ring_equals_the_python_twin(redis_url: str) -> None:
    """The Lua script and ``DedupRing`` take the same decisions and write the same bytes."""
    client = await connect_redis(redis_url)
    store = RedisStore(client, redis_url)
    twin, seq = DedupRing(WINDOW), 0
    rng = np.random.default_rng(0)
    try:
        for _ in range(30):
            ids = rng.integers(1, 400, size=int(rng.integers(1, 40))) + rng.random() * 0
            recs, digs = events(*(float(i) for i in ids))
            (got,) = await store.append_batch(
                [AppendRequest("u", recs, digs)], dedup_window=WINDOW, create=True
            )
            want = twin.admit(seq, digs, decode_log(recs)["ts"])
            seq += len(want.fresh)
            assert (got.accepted, got.duplicates, got.refused, got.seq) == (
                len(want.fresh),
                want.duplicates,
                want.refused,
                seq,
            )
            assert await client.get("solar:{u}:dedup") == twin.to_bytes()
    finally:
        await store.close()
