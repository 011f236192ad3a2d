"""open_backends: embedded store and stream without a Redis URL; Redis (or a cluster) with one.
open_history: the embedded history without a history URL; PostgreSQL with one."""

from __future__ import annotations

import pytest

from service.backends import UnsharedHistory, open_backends, open_history
from service.errors import HistoryUnavailable, StoreUnavailable
from service.history.base import HistoryChunk, HistoryStore
from service.history.memory import MemoryHistory
from service.history.postgres import PostgresHistory
from service.settings import Settings
from service.store.base import Store
from service.store.memory import MemoryStore
from service.store.redis_store import RedisStore
from service.stream.base import IngestStream
from service.stream.memory import MemoryStream
from service.stream.redis_stream import RedisStream
from solar_tools.redis_server import free_port

pytestmark = pytest.mark.anyio


async def test_no_url_is_the_embedded_store_and_stream() -> None:
    for url in (None, ""):
        backends = await open_backends(Settings(redis_url=url, partitions=3))
        assert isinstance(backends.store, MemoryStore) and isinstance(backends.store, Store)
        assert isinstance(backends.stream, MemoryStream) and backends.stream.partitions == 3
        assert isinstance(backends.stream, IngestStream)
        await backends.close()


@pytest.mark.parametrize("kind", ["redis", "cluster"])
async def test_a_url_connects_to_redis(kind: str, request: pytest.FixtureRequest) -> None:
    url: str = request.getfixturevalue("redis_url" if kind == "redis" else "cluster_url")
    backends = await open_backends(Settings(redis_url=url, store_timeout_s=0.5))
    try:
        assert isinstance(backends.store, RedisStore)
        assert isinstance(backends.stream, RedisStream) and backends.stream.partitions == 16
        await backends.store.ping()
        await backends.stream.post("u", 1, 1.0)
        assert sum([await backends.stream.backlog(k) for k in range(16)]) == 1
    finally:
        await backends.close()


async def test_an_unreachable_redis_is_refused_after_the_retries() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(
        redis_url=url, store_timeout_s=0.2, store_connect_retries=1, store_backoff_s=0.01
    )
    with pytest.raises(StoreUnavailable, match="after 2 attempts"):
        await open_backends(settings)


async def test_a_process_sharing_redis_refuses_the_embedded_history(
    redis_url: str, postgres_url: str
) -> None:
    """A worker (or a serve with an external applier) on Redis with an in-process history
    would read other processes' users' histories as empty: refused before connecting."""
    with pytest.raises(UnsharedHistory, match="SOLAR_HISTORY_URL"):
        await open_backends(Settings(redis_url=redis_url), shares_redis="solar worker")
    lone = await open_backends(Settings(redis_url=redis_url))  # a lone serve: embedded is fine
    assert isinstance(lone.history, MemoryHistory)
    await lone.close()
    shared = await open_backends(
        Settings(redis_url=redis_url, history_url=postgres_url), shares_redis="solar worker"
    )
    assert isinstance(shared.history, PostgresHistory)
    await shared.close()


async def test_no_history_url_is_the_embedded_history() -> None:
    history = await open_history(Settings(history_url=""))
    assert isinstance(history, MemoryHistory) and isinstance(history, HistoryStore)
    await history.close()


async def test_a_history_url_opens_postgresql_and_creates_the_table(postgres_url: str) -> None:
    settings = Settings(history_url=postgres_url, history_schema="backends", history_table="h")
    history = await open_history(settings)
    try:
        assert isinstance(history, PostgresHistory) and isinstance(history, HistoryStore)
        await history.append([HistoryChunk("u", 1, bytes(40))])
        assert await history.last_seq("u") == 2
        again = await open_history(settings)  # the table exists: kept, not recreated
        assert await again.last_seq("u") == 2
        await again.close()
    finally:
        await history.close()


async def test_an_unreachable_postgresql_is_refused_after_the_retries() -> None:
    settings = Settings(
        history_url=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        history_timeout_s=0.5,
        store_connect_retries=1,
        store_backoff_s=0.01,
    )
    with pytest.raises(HistoryUnavailable, match=r"postgresql create schema at .* failed"):
        await open_history(settings)


def test_a_history_url_must_be_postgresql() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        Settings(history_url="redis://127.0.0.1:6379/0")
    with pytest.raises(ValueError):
        Settings(history_table="Robert'); DROP TABLE")
