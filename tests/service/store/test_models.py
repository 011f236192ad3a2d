"""The registry of active model versions, the same on the embedded twin and a real Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from service.errors import InvalidModelVersion, TooManyModelVersions
from service.store.models import MemoryModels, ModelRegistry, RedisModels
from service.store.redis_client import connect_redis

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def models(request: pytest.FixtureRequest) -> AsyncIterator[ModelRegistry]:
    if request.param == "memory":
        yield MemoryModels()
        return
    url: str = request.getfixturevalue("redis_url")
    client = await connect_redis(url)
    yield RedisModels(client, url)
    await client.aclose()


async def test_register_refresh_and_remove(models: ModelRegistry) -> None:
    before_ms = int(time.time() * 1_000)
    await models.register("a1", "/models/a", limit=2)
    await models.register("b2", "/models/b", limit=2)
    await models.register("a1", "/models/a", limit=2)  # a refresh, not a third version
    active = await models.active()
    assert [(a.version, a.model_path) for a in active] == [("a1", "/models/a"), ("b2", "/models/b")]
    assert all(a.seen_ms >= before_ms for a in active)
    with pytest.raises(TooManyModelVersions, match="retire one first"):
        await models.register("c3", "/models/c", limit=2)
    assert await models.remove("a1") is True
    assert await models.remove("a1") is False
    await models.register("c3", "/models/c", limit=2)
    assert [a.version for a in await models.active()] == ["b2", "c3"]


async def test_versions_that_cannot_name_a_key_are_refused(models: ModelRegistry) -> None:
    with pytest.raises(InvalidModelVersion):
        await models.register("a:b", "/models/a", limit=3)
    assert await models.active() == []
