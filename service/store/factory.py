"""Open the configured store: the embedded one, or Redis once it answers."""

from __future__ import annotations

import logging

from service.settings import Settings
from service.store.base import Store, StoreObserver
from service.store.memory import MemoryStore
from service.store.redis_store import RedisStore

__all__ = ["open_store"]

logger = logging.getLogger(__name__)


async def open_store(settings: Settings, observer: StoreObserver | None = None) -> Store:
    """``MemoryStore`` without ``SOLAR_REDIS_URL``, else a connected ``RedisStore``.

    Raises:
        StoreUnavailable: Redis did not answer within the configured retries.
    """
    if not settings.redis_url:
        logger.info("store: embedded (in-process, not shared, not persistent)")
        return MemoryStore(observer=observer)
    store = await RedisStore.connect(
        settings.redis_url,
        timeout_s=settings.store_timeout_s,
        retries=settings.store_connect_retries,
        backoff_s=settings.store_backoff_s,
        observer=observer,
    )
    logger.info("store: redis at %s", store.url)
    return store
