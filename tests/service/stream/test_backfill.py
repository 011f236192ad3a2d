"""The backfill's work queue on a real Redis: listing is resumable and counted once, items go
to one consumer at a time, an idle one is taken over, done is counted once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.store.redis_client import RedisClient, connect_redis
from service.stream.backfill import USERS_PER_ITEM, BackfillQueue

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RedisClient]:
    created = await connect_redis(redis_url)
    yield created
    await created.aclose()


async def test_listing_taking_and_finishing(client: RedisClient, redis_url: str) -> None:
    queue = BackfillQueue(client, redis_url, "v1")
    await queue.ensure_group()
    await queue.ensure_group()  # idempotent
    users = [f"u{i:03d}" for i in range(USERS_PER_ITEM + 5)]
    assert await queue.list_page(users, last_page=False) == len(users)
    assert (await queue.progress()).cursor == users[-1]
    assert await queue.list_page([], last_page=True) == len(users)
    progress = await queue.progress()
    assert progress.listed and progress.remaining == 2 and not progress.complete
    first = await queue.take("c1", claim_idle_s=60, block_s=0.01)
    second = await queue.take("c2", claim_idle_s=60, block_s=0.01)
    assert first is not None and second is not None
    assert first.users + second.users == users
    assert await queue.take("c1", claim_idle_s=60, block_s=0.01) is None  # nothing idle yet
    assert await queue.done(first, 100)
    assert not await queue.done(first, 100)  # counted once
    # c2 died holding its item: another consumer takes it once it is idle long enough.
    taken = await queue.take("c3", claim_idle_s=0, block_s=0.01)
    assert taken is not None and taken.entry_id == second.entry_id
    assert await queue.done(taken, 7)
    final = await queue.progress()
    assert final.complete and (final.total, final.done, final.events) == (len(users), 37, 107)
    await queue.clear()
    assert (await queue.progress()).total == 0
