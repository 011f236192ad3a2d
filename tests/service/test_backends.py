"""open_backends: embedded store and stream without a Redis URL; Redis (or a cluster) with one."""

from __future__ import annotations

import pytest

from service.backends import open_backends
from service.errors import StoreUnavailable
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
