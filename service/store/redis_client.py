"""One redis-py asyncio client per process, for a single Redis or a Redis Cluster.

``SOLAR_REDIS_URL=redis://host:port/db`` (or ``rediss://``) connects to one server through a
blocking connection pool; ``redis+cluster://host:port`` (or any URL with
``SOLAR_REDIS_CLUSTER=1``) uses redis-py's cluster client, which discovers the masters from
that node and routes every command by its key's hash slot. All keys of one user share a hash
tag, and so do the keys of one ingest partition, so every Lua script stays in one slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_exc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.errors import StoreError, StoreFull, StoreUnavailable

__all__ = ["CLUSTER_SCHEME", "RedisClient", "as_text", "connect_redis", "redact", "redis_errors"]

logger = logging.getLogger(__name__)

CLUSTER_SCHEME = "redis+cluster"
RedisClient = aioredis.Redis | RedisCluster
_MAX_CONNECT_BACKOFF_S = 5.0
# Errors that mean "the store cannot be reached now" (HTTP 503), not "the request is wrong".
# redis BusyLoadingError, AuthenticationError and MaxConnectionsError are ConnectionErrors;
# ClusterDownError and TryAgainError come while a cluster heals.
_UNAVAILABLE = (
    redis_exc.ConnectionError,
    redis_exc.TimeoutError,
    redis_exc.ReadOnlyError,
    redis_exc.ClusterDownError,
    redis_exc.TryAgainError,
    redis_exc.RedisClusterException,  # "cannot be connected": no node answered
    OSError,  # includes the builtin (and asyncio) TimeoutError
)


def as_text(value: Any) -> str:
    """A reply's value as text (a client without ``decode_responses`` answers bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def redact(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    netloc += f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=netloc))


@asynccontextmanager
async def redis_errors(op: str, url: str) -> AsyncIterator[None]:
    """Translate redis failures of ``op`` into ``StoreUnavailable`` / ``StoreError``."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"redis {op} at {url} failed: {type(exc).__name__}: {exc}") from exc
    except redis_exc.OutOfMemoryError as exc:  # maxmemory under noeviction: back off
        raise StoreFull(f"redis {op} at {url} is full: {exc}") from exc
    except redis_exc.ResponseError as exc:
        if "OOM" in str(exc):  # inside a script the OOM reply comes back as a plain error
            raise StoreFull(f"redis {op} at {url} is full: {exc}") from exc
        raise StoreError(f"redis {op} at {url} failed: {type(exc).__name__}: {exc}") from exc
    except redis_exc.RedisError as exc:
        raise StoreError(f"redis {op} at {url} failed: {type(exc).__name__}: {exc}") from exc


def make_client(
    url: str,
    *,
    cluster: bool = False,
    timeout_s: float = 1.0,
    max_connections: int = 64,
    command_retries: int = 1,
) -> RedisClient:
    """An unconnected client; ``cluster`` (or a ``redis+cluster://`` URL) for Redis Cluster."""
    retry = Retry(NoBackoff(), command_retries)
    common: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if cluster or url.startswith(CLUSTER_SCHEME + "://"):
        plain = "redis://" + url.split("://", 1)[1]
        return RedisCluster.from_url(plain, max_connections=max_connections, retry=retry, **common)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s, retry=retry, **common
    )
    return aioredis.Redis.from_pool(pool)


async def connect_redis(
    url: str,
    *,
    cluster: bool = False,
    timeout_s: float = 1.0,
    retries: int = 5,
    backoff_s: float = 0.2,
    max_connections: int = 64,
) -> RedisClient:
    """A client once Redis answers PING: ``1 + retries`` attempts, sleeping
    ``backoff_s * 2**attempt`` seconds (at most 5 s) between them.

    Raises:
        StoreUnavailable: naming the URL (password hidden) and the number of attempts.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    shown = redact(url)
    last: Exception | None = None
    for attempt in range(retries + 1):
        client = make_client(
            url, cluster=cluster, timeout_s=timeout_s, max_connections=max_connections
        )
        try:
            async with redis_errors("ping", shown):
                await client.ping()
            return client
        except StoreUnavailable as exc:
            last = exc
            await client.aclose()
            if attempt == retries:
                break
            delay_s = min(backoff_s * 2**attempt, _MAX_CONNECT_BACKOFF_S)
            logger.warning(
                "redis at %s unreachable (attempt %d/%d), retrying in %.2f s: %s",
                shown,
                attempt + 1,
                retries + 1,
                delay_s,
                exc,
            )
            await asyncio.sleep(delay_s)
    raise StoreUnavailable(f"redis at {shown} unreachable after {retries + 1} attempts: {last}")
