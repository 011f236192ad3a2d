"""The production store: redis-py asyncio over a blocking connection pool (DESIGN §4).

The three keys of a user share a hash tag (``service.store.keys``), so Redis Cluster keeps them in
one slot; every write is one Lua compare-and-set on the user's version counter, atomic across
processes and replicas. Semantics are those of ``service.store.base.Store``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_exc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.errors import StoreError, StoreUnavailable
from service.store.base import ObservedStore, StoreObserver, UserRecord, check_counts, check_log
from service.store.eventlog import RECORD_SIZE
from service.store.keys import user_keys

__all__ = ["RedisStore"]

logger = logging.getLogger(__name__)

_MAX_CONNECT_BACKOFF_S = 5.0
# Errors that mean "the store cannot be reached now" (HTTP 503), not "the request is wrong".
# redis BusyLoadingError, AuthenticationError and MaxConnectionsError are ConnectionErrors.
_UNAVAILABLE = (
    redis_exc.ConnectionError,
    redis_exc.TimeoutError,
    redis_exc.ReadOnlyError,
    OSError,  # includes the builtin (and asyncio) TimeoutError
)

# KEYS: state, log, version. ARGV: expected version, state, log bytes, mode, log cap (bytes).
# mode "append": append to the log and keep its last `cap` bytes; "replace": set the log.
_CAS_LUA = """
local current = tonumber(redis.call('GET', KEYS[3]) or '0')
if current ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[4] == 'replace' then
  if #ARGV[3] > 0 then
    redis.call('SET', KEYS[2], ARGV[3])
  else
    redis.call('DEL', KEYS[2])
  end
else
  local length = redis.call('STRLEN', KEYS[2])
  if #ARGV[3] > 0 then
    length = redis.call('APPEND', KEYS[2], ARGV[3])
  end
  local cap = tonumber(ARGV[5])
  if length > cap then
    if cap > 0 then
      redis.call('SET', KEYS[2], redis.call('GETRANGE', KEYS[2], length - cap, -1))
    else
      redis.call('DEL', KEYS[2])
    end
  end
end
return redis.call('INCR', KEYS[3])
"""


def _redact(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    netloc += f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=netloc))


class RedisStore(ObservedStore):
    """Redis-backed store (redis-py asyncio, blocking connection pool).

    Args:
        url: ``redis://[[user]:password@]host:port/db`` (``rediss://`` for TLS).
        socket_timeout: seconds to wait for a reply before ``StoreUnavailable``.
        socket_connect_timeout: seconds to wait for a TCP connect.
        max_connections: pool size; callers beyond it wait up to ``pool_timeout`` seconds.
        pool_timeout: seconds to wait for a free pooled connection.
        command_retries: immediate retries of a command after a connection error or timeout,
            e.g. to replace a pooled connection that died while Redis restarted.
        observer: receives op latencies and CAS conflicts.

    The constructor does not connect; use ``await RedisStore.connect(url)`` to wait for Redis.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = 1.0,
        socket_connect_timeout: float = 1.0,
        max_connections: int = 64,
        pool_timeout: float = 1.0,
        command_retries: int = 1,
        observer: StoreObserver | None = None,
    ) -> None:
        super().__init__(observer)
        self.url = _redact(url)
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            retry=Retry(NoBackoff(), command_retries),
        )
        self._client = aioredis.Redis.from_pool(pool)
        self._cas = self._client.register_script(_CAS_LUA)  # EVALSHA, loads on NOSCRIPT

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        timeout_s: float = 1.0,
        retries: int = 5,
        backoff_s: float = 0.2,
        max_connections: int = 64,
        command_retries: int = 1,
        observer: StoreObserver | None = None,
    ) -> RedisStore:
        """Create a store and wait until Redis answers PING.

        Tries ``1 + retries`` times, sleeping ``backoff_s * 2**attempt`` seconds (at most 5 s)
        between attempts. ``timeout_s`` is the connect, reply and pool-wait timeout.

        Raises:
            StoreUnavailable: naming the URL (password hidden) and the number of attempts.
        """
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        store = cls(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            pool_timeout=timeout_s,
            max_connections=max_connections,
            command_retries=command_retries,
            observer=observer,
        )
        try:
            for attempt in range(retries):
                try:
                    await store.ping()
                    return store
                except StoreUnavailable as exc:
                    delay_s = min(backoff_s * 2**attempt, _MAX_CONNECT_BACKOFF_S)
                    logger.warning(
                        "redis at %s unreachable (attempt %d/%d), retrying in %.2f s: %s",
                        store.url,
                        attempt + 1,
                        retries + 1,
                        delay_s,
                        exc,
                    )
                    await asyncio.sleep(delay_s)
            try:
                await store.ping()
            except StoreUnavailable as exc:
                raise StoreUnavailable(
                    f"redis at {store.url} unreachable after {retries + 1} attempts: {exc}"
                ) from exc
        except BaseException:
            await store.close()
            raise
        return store

    @asynccontextmanager
    async def _op(self, op: str) -> AsyncIterator[None]:
        """Time ``op`` and translate redis failures into store exceptions."""
        async with self._timed(op):
            try:
                yield
            except _UNAVAILABLE as exc:
                raise StoreUnavailable(
                    f"redis {op} at {self.url} failed: {type(exc).__name__}: {exc}"
                ) from exc
            except redis_exc.RedisError as exc:
                raise StoreError(
                    f"redis {op} at {self.url} failed: {type(exc).__name__}: {exc}"
                ) from exc

    async def get_state(self, user_id: str) -> bytes | None:
        key = user_keys(user_id).state
        async with self._op("get_state"):
            state = await self._client.get(key)
        return cast("bytes | None", state)  # decode_responses is off: replies are bytes

    async def read(
        self, user_id: str, *, with_log: bool = True, log_tail: int | None = None
    ) -> UserRecord:
        keys = user_keys(user_id)
        check_counts(log_tail=log_tail)
        async with self._op("read"):
            # MULTI/EXEC: one round trip and a consistent snapshot of the three keys.
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(keys.state)
                pipe.get(keys.version)
                if with_log and log_tail is None:
                    pipe.get(keys.log)
                elif with_log and log_tail:
                    pipe.getrange(keys.log, -log_tail * RECORD_SIZE, -1)
                results = await pipe.execute()
        state, version = results[0], results[1]
        log = results[2] if len(results) > 2 and results[2] is not None else b""
        return UserRecord(state=state, log=log, version=int(version or 0))

    async def _cas_call(self, op: str, user_id: str, args: list[bytes | int | str]) -> bool:
        keys = user_keys(user_id)
        async with self._op(op):
            new_version = await self._cas(keys=list(keys), args=args)
        return self._cas_result(bool(new_version))

    async def write_if_unchanged(
        self, user_id: str, expected_version: int, state: bytes, append_log: bytes, log_cap: int
    ) -> bool:
        check_log(append_log)
        check_counts(log_cap=log_cap)
        args: list[bytes | int | str] = [
            expected_version,
            bytes(state),
            bytes(append_log),
            "append",
            log_cap * RECORD_SIZE,
        ]
        return await self._cas_call("write", user_id, args)

    async def replace(self, user_id: str, expected_version: int, state: bytes, log: bytes) -> bool:
        check_log(log)
        args: list[bytes | int | str] = [expected_version, bytes(state), bytes(log), "replace", 0]
        return await self._cas_call("replace", user_id, args)

    async def delete(self, user_id: str) -> bool:
        keys = user_keys(user_id)
        async with self._op("delete"):
            removed = await self._client.delete(*keys)
        return int(removed) > 0

    async def ping(self) -> None:
        async with self._op("ping"):
            await self._client.ping()

    async def close(self) -> None:
        """Close the client and disconnect its pool; safe to call more than once."""
        await self._client.aclose()
