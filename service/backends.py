"""Open the configured store, ingest stream and durable history: embedded, or on one Redis
(or a cluster) with the history tier the settings name."""

from __future__ import annotations

import logging
from typing import NamedTuple

from service.history.base import HistoryStore
from service.history.memory import MemoryHistory
from service.settings import Settings
from service.store.base import Store, StoreObserver
from service.store.memory import MemoryStore
from service.store.redis_client import connect_redis, redact
from service.store.redis_store import RedisStore
from service.stream.base import IngestStream
from service.stream.memory import MemoryStream
from service.stream.redis_stream import RedisStream

__all__ = ["Backends", "open_backends"]

logger = logging.getLogger(__name__)


class Backends(NamedTuple):
    """The store and the ingest stream of one process (they share one Redis client), and the
    durable history tier."""

    store: Store
    stream: IngestStream
    history: HistoryStore

    async def close(self) -> None:
        await self.stream.close()
        await self.store.close()
        await self.history.close()


async def open_backends(settings: Settings, observer: StoreObserver | None = None) -> Backends:
    """Embedded store and stream without ``SOLAR_REDIS_URL``; else Redis, once it answers.

    Raises:
        StoreUnavailable: Redis did not answer within the configured retries.
    """
    if not settings.redis_url:
        logger.info("store: embedded (in-process, not shared, not persistent)")
        return Backends(
            MemoryStore(observer=observer), MemoryStream(settings.partitions), MemoryHistory()
        )
    client = await connect_redis(
        settings.redis_url,
        cluster=settings.redis_cluster,
        timeout_s=settings.store_timeout_s,
        retries=settings.store_connect_retries,
        backoff_s=settings.store_backoff_s,
    )
    url = redact(settings.redis_url)
    logger.info("store: redis at %s (%d ingest partitions)", url, settings.partitions)
    return Backends(
        RedisStore(client, url, observer=observer),
        RedisStream(client, url, settings.partitions),
        MemoryHistory(),  # the durable tier's selection (SOLAR_HISTORY_URL) comes with it
    )
