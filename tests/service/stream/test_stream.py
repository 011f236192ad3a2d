"""Ingest-stream semantics, identical in process, on Redis and on a Redis Cluster: partitions,
leases, delivery once per consumer group, pending entries, take-over, backlog."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.store.keys import partition_of
from service.store.redis_client import connect_redis
from service.stream.base import IngestStream, dirty_member, marked_user
from service.stream.memory import MemoryStream
from service.stream.redis_stream import RedisStream

pytestmark = pytest.mark.anyio
P = 4


@pytest.fixture(params=["memory", "redis", "cluster"])
async def stream(request: pytest.FixtureRequest) -> AsyncIterator[IngestStream]:
    if request.param == "memory":
        yield MemoryStream(P)
        return
    fixture = "redis_url" if request.param == "redis" else "cluster_url"
    url: str = request.getfixturevalue(fixture)
    client = await connect_redis(url)
    yield RedisStream(client, url, P)
    await client.aclose()


def _users_of(partition: int, n: int) -> list[str]:
    users = [f"u{i}" for i in range(200) if partition_of(f"u{i}", P) == partition]
    return users[:n]


async def test_partition_of_is_stable_and_spread() -> None:
    assert partition_of("alice", 16) == partition_of("alice", 16)
    assert len({partition_of(f"u{i}", 16) for i in range(200)}) == 16


async def test_notices_reach_one_reader_once_and_stay_pending_until_acked(
    stream: IngestStream,
) -> None:
    users = _users_of(1, 3)
    for seq, user in enumerate(users, start=1):
        await stream.post(user, seq, 1_000.0 + seq)
    assert await stream.backlog(1) == 3
    got = await stream.read(1, "a", count=10, block_s=0.05)
    assert [(n.user_id, n.seq, n.posted_s) for n in got] == [
        (u, i, 1_000.0 + i) for i, u in enumerate(users, start=1)
    ]
    assert all(n.partition == 1 for n in got)
    assert await stream.read(1, "b", count=10, block_s=0.05) == []  # delivered already
    await stream.ack({1: [got[0].entry_id]})
    assert await stream.backlog(1) == 2
    # A take-over hands the unacknowledged ones to the new owner.
    claimed = await stream.claim(1, "b", count=10)
    assert [n.entry_id for n in claimed] == [n.entry_id for n in got[1:]]
    await stream.ack({1: [n.entry_id for n in claimed]})
    assert await stream.backlog(1) == 0
    assert await stream.claim(1, "b", count=10) == []


async def test_one_ack_settles_entries_of_several_partitions(stream: IngestStream) -> None:
    users = {k: _users_of(k, 2) for k in (0, 2, 3)}
    for two in users.values():
        for seq, user in enumerate(two, start=1):
            await stream.post(user, seq, 1.0)
    got = {k: await stream.read(k, "a", count=10, block_s=0.05) for k in users}
    # All of 0's, the first of 3's, none of 2's (an empty list is allowed).
    await stream.ack({0: [n.entry_id for n in got[0]], 2: [], 3: [got[3][0].entry_id]})
    assert [await stream.backlog(k) for k in (0, 2, 3)] == [0, 2, 1]
    claimed = {k: await stream.claim(k, "b", count=10) for k in users}
    assert {k: [n.entry_id for n in ns] for k, ns in claimed.items()} == {
        0: [],
        2: [n.entry_id for n in got[2]],
        3: [got[3][1].entry_id],
    }


async def test_an_ack_removes_the_members_of_the_calls_it_announced(
    stream: IngestStream,
) -> None:
    """A mark is a member per user and ingest call, a notice carries its call's token, and
    ``ack`` removes the members it is given: another call's member of a user stays."""
    one, two = _users_of(1, 2)
    await stream.mark([one, two], 10.0, "call-a")
    await stream.mark([two], 11.0, "call-b")  # a second call of the second user
    await stream.post_batch([(one, 1), (two, 1)], 12.0, "call-a")
    await stream.post(one, 2, 13.0)  # posted without a token
    got = await stream.read(1, "a", count=10, block_s=0.05)
    assert [n.token for n in got] == ["call-a", "call-a", ""]
    assert await stream.dirty_count(1) == 3
    members = [dirty_member(n.user_id, n.token) for n in got if n.token]
    await stream.ack({1: [n.entry_id for n in got]}, {1: members})
    assert await stream.backlog(1) == 0
    assert await stream.dirty(1, 20.0, count=10) == [(dirty_member(two, "call-b"), 11.0)]
    assert marked_user(dirty_member(two, "call-b")) == two == marked_user(two)
    await stream.ack({}, {1: [dirty_member(two, "call-b")]})  # members alone
    assert await stream.dirty_count(1) == 0


async def test_a_blocked_read_wakes_on_a_post(stream: IngestStream) -> None:
    user = _users_of(2, 1)[0]
    reader = asyncio.create_task(stream.read(2, "a", count=10, block_s=2.0))
    await asyncio.sleep(0.1)
    await stream.post(user, 7, 1.0)
    got = await asyncio.wait_for(reader, 3.0)
    assert [n.seq for n in got] == [7]


async def test_a_lease_has_one_holder_until_it_expires_or_is_released(
    stream: IngestStream,
) -> None:
    assert await stream.acquire(0, "a", lease_s=0.3)
    assert not await stream.acquire(0, "b", lease_s=0.3)
    assert await stream.acquire(0, "a", lease_s=0.3)  # renewing one's own
    await asyncio.sleep(0.45)
    assert await stream.acquire(0, "b", lease_s=5.0)  # expired: taken over
    assert not await stream.acquire(0, "a", lease_s=5.0)
    await stream.release(0, "a")  # not the holder: no effect
    assert not await stream.acquire(0, "a", lease_s=5.0)
    await stream.release(0, "b")
    assert await stream.acquire(0, "a", lease_s=5.0)


async def test_heartbeats_count_live_appliers(stream: IngestStream) -> None:
    assert await stream.heartbeat("a", ttl_s=0.3) == 1
    assert await stream.heartbeat("b", ttl_s=0.3) == 2
    await asyncio.sleep(0.4)
    assert await stream.heartbeat("b", ttl_s=0.3) == 1


async def test_an_applier_that_leaves_is_counted_out_at_once(stream: IngestStream) -> None:
    assert await stream.heartbeat("a", ttl_s=60.0) == 1
    assert await stream.heartbeat("b", ttl_s=60.0) == 2
    await stream.leave("a")
    await stream.leave("nobody")  # (a no-op)
    assert await stream.heartbeat("b", ttl_s=60.0) == 1
