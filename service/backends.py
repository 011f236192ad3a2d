"""Open the configured store and ingest stream (embedded, or on one Redis or a cluster) and
the durable history tier (embedded, or PostgreSQL)."""

from __future__ import annotations

import logging
from typing import NamedTuple

from service.core.applier import Applier
from service.core.serving_model import ServingModel
from service.history.base import HistoryObserver, HistoryStore
from service.history.memory import MemoryHistory
from service.history.postgres import PostgresHistory, redact_url
from service.metrics import Metrics
from service.settings import Settings
from service.store.base import Store, StoreObserver
from service.store.memory import MemoryStore
from service.store.models import MemoryModels, ModelRegistry, RedisModels
from service.store.redis_client import RedisClient, connect_redis, redact
from service.store.redis_store import RedisStore
from service.stream.base import IngestStream
from service.stream.memory import MemoryStream
from service.stream.redis_stream import RedisStream

__all__ = [
    "Backends",
    "UnsharedHistory",
    "connect_shared_redis",
    "open_backends",
    "open_history",
]

logger = logging.getLogger(__name__)


class Backends(NamedTuple):
    """The store, the ingest stream and the registry of model versions of one process (they
    share one Redis client), and the durable history tier."""

    store: Store
    stream: IngestStream
    history: HistoryStore
    models: ModelRegistry

    def applier(self, settings: Settings, model: ServingModel, metrics: Metrics) -> Applier:
        """The applier of a process (a worker, or a serve's inline one) over these backends."""
        return Applier.create(
            settings,
            self.store,
            self.stream,
            model,
            metrics,
            history=self.history,
            models=self.models,
        )

    async def close(self) -> None:
        await self.stream.close()
        await self.store.close()
        await self.history.close()


class UnsharedHistory(ValueError):
    """Redis is shared with other processes but the history tier is the embedded one.

    The embedded history lives in one process's memory: a `solar worker`, an external
    applier's serve, or a second uvicorn worker would each see only their own part of the
    histories, so rebuilds, repairs and `svd_exact`/`softmax` would read truncated histories.
    """

    def __init__(self, role: str) -> None:
        super().__init__(
            f"{role} shares Redis with other processes, so it needs a shared durable history: "
            "set SOLAR_HISTORY_URL=postgresql://… (the embedded history lives in one "
            "process's memory; it serves only a lone `solar serve` with SOLAR_APPLIER=inline "
            "and SOLAR_WORKERS=1)"
        )


async def connect_shared_redis(settings: Settings) -> RedisClient:
    """A client of ``SOLAR_REDIS_URL`` (one Redis or a cluster) once it answers, with the
    configured timeout and connection retries.

    Raises:
        StoreUnavailable: Redis did not answer within the configured retries.
    """
    if not settings.redis_url:
        raise ValueError("SOLAR_REDIS_URL is not set")
    return await connect_redis(
        settings.redis_url,
        cluster=settings.redis_cluster,
        timeout_s=settings.store_timeout_s,
        retries=settings.store_connect_retries,
        backoff_s=settings.store_backoff_s,
    )


async def open_backends(
    settings: Settings,
    observer: StoreObserver | None = None,
    *,
    history_observer: HistoryObserver | None = None,
    shares_redis: str | None = None,
) -> Backends:
    """Embedded store and stream without ``SOLAR_REDIS_URL``; else Redis, once it answers;
    the history tier of ``open_history``.

    ``shares_redis``: this process is one of several on the same Redis (a worker, a serve
    with an external applier or several uvicorn workers), named for the error message.

    Raises:
        UnsharedHistory: ``shares_redis`` with Redis and no ``SOLAR_HISTORY_URL``.
        StoreUnavailable: Redis did not answer within the configured retries.
        HistoryUnavailable: PostgreSQL did not answer within the configured retries.
    """
    if settings.redis_url and shares_redis and not settings.history_url:
        raise UnsharedHistory(shares_redis)
    history = await open_history(settings, history_observer)
    if not settings.redis_url:
        logger.info("store: embedded (in-process, not shared, not persistent)")
        return Backends(
            MemoryStore(observer=observer),
            MemoryStream(settings.partitions),
            history,
            MemoryModels(),
        )
    client = await connect_shared_redis(settings)
    url = redact(settings.redis_url)
    logger.info("store: redis at %s (%d ingest partitions)", url, settings.partitions)
    return Backends(
        RedisStore(client, url, observer=observer),
        RedisStream(client, url, settings.partitions),
        history,
        RedisModels(client, url),
    )


async def open_history(settings: Settings, observer: HistoryObserver | None = None) -> HistoryStore:
    """The embedded history without ``SOLAR_HISTORY_URL``; else PostgreSQL, once it answers
    (its schema and table created if absent).

    Raises:
        HistoryUnavailable: PostgreSQL did not answer within the configured retries.
    """
    if not settings.history_url:
        logger.info("history: embedded (in-process, not shared, not persistent)")
        return MemoryHistory()
    history = await PostgresHistory.open(
        settings.history_url,
        schema=settings.history_schema,
        table=settings.history_table,
        pool_size=settings.history_pool_size,
        timeout_s=settings.history_timeout_s,
        segment_events=settings.history_segment_events,
        compact_after=settings.history_compact_events,
        compact_idle_s=settings.history_compact_idle_s,
        observer=observer,
        retries=settings.store_connect_retries,
        backoff_s=settings.store_backoff_s,
    )
    logger.info(
        "history: postgresql at %s (%s.%s, %d connections)",
        redact_url(settings.history_url),
        settings.history_schema,
        settings.history_table,
        settings.history_pool_size,
    )
    return history
