"""open_store: the embedded store without a Redis URL, a connected RedisStore with one."""

from __future__ import annotations

import pytest

from service.errors import StoreUnavailable
from service.settings import Settings
from service.store.base import Store
from service.store.factory import open_store
from service.store.memory import MemoryStore
from service.store.redis_store import RedisStore
from solar_tools.redis_server import free_port

pytestmark = pytest.mark.anyio


async def test_no_url_is_the_embedded_store() -> None:
    for url in (None, ""):
        store = await open_store(Settings(redis_url=url))
        assert isinstance(store, MemoryStore) and isinstance(store, Store)
        await store.close()


async def test_a_url_connects_to_redis(redis_url: str) -> None:
    store = await open_store(Settings(redis_url=redis_url, store_timeout_s=0.5))
    try:
        assert isinstance(store, RedisStore) and isinstance(store, Store)
        await store.write_if_unchanged("u", 0, b"S", b"", log_cap=10)
        assert await store.get_state("u") == b"S"
    finally:
        await store.close()


async def test_an_unreachable_redis_is_refused_after_the_retries() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(
        redis_url=url, store_timeout_s=0.2, store_connect_retries=1, store_backoff_s=0.01
    )
    with pytest.raises(StoreUnavailable, match="after 2 attempts"):
        await open_store(settings)
