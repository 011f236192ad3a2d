"""Per-user storage: a LowRankState blob, a capped event log and a compare-and-set version.

Two implementations of one ``Store`` protocol with the same semantics:

- ``RedisStore`` (production): redis-py asyncio over a blocking connection pool. The three keys
  of a user share a hash tag (``service.keys``); writes are one Lua script, so the
  compare-and-set is atomic across processes and replicas.
- ``MemoryStore`` (embedded default): a dict guarded by an ``asyncio.Lock``.

Versions start at 0 for an unknown user and grow by one per successful write. ``delete``
drops the version too, so a writer holding a version read before a delete may succeed against
a re-created user that reached the same version (ABA); that needs a delete and as many
re-writes between one read and its write.

Latency (seconds, per op name) and CAS conflicts go to an optional ``StoreObserver`` so
that every Prometheus object stays in ``service.metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_exc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.eventlog import RECORD_SIZE, LogFormatError
from service.keys import user_keys, validate_user_id

__all__ = [
    "MemoryStore",
    "RedisStore",
    "Store",
    "StoreError",
    "StoreObserver",
    "StoreUnavailable",
    "UserRecord",
    "create_store",
]

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


class StoreError(Exception):
    """Base class of every store failure; redis exceptions never escape as themselves."""


class StoreUnavailable(StoreError):
    """The store is unreachable or timed out (HTTP 503 with Retry-After)."""


@dataclass(frozen=True)
class UserRecord:
    """One consistent snapshot of a user.

    Attributes:
        state: LowRankState blob (opaque here), None when the user is unknown.
        log: concatenated 20-byte event records, oldest first; b"" if none or not requested.
        version: compare-and-set token; 0 when the user does not exist.
    """

    state: bytes | None
    log: bytes
    version: int


class StoreObserver(Protocol):
    """Receives store measurements; implemented in ``service.metrics``."""

    def op_seconds(self, op: str, seconds: float) -> None: ...

    def conflict(self) -> None: ...


@runtime_checkable
class Store(Protocol):
    """Storage of user states and event logs; see the module docstring for the semantics."""

    async def get_state(self, user_id: str) -> bytes | None: ...

    async def read(
        self, user_id: str, *, with_log: bool = True, log_tail: int | None = None
    ) -> UserRecord: ...

    async def write_if_unchanged(
        self, user_id: str, expected_version: int, state: bytes, append_log: bytes, log_cap: int
    ) -> bool: ...

    async def replace(
        self, user_id: str, expected_version: int, state: bytes, log: bytes
    ) -> bool: ...

    async def delete(self, user_id: str) -> bool: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def _check_log(blob: bytes) -> None:
    if len(blob) % RECORD_SIZE:
        raise LogFormatError(len(blob))


def _check_counts(log_tail: int | None = None, log_cap: int = 0) -> None:
    if log_tail is not None and log_tail < 0:
        raise ValueError(f"log_tail must be >= 0 or None, got {log_tail}")
    if log_cap < 0:
        raise ValueError(f"log_cap must be >= 0, got {log_cap}")


class _Observed:
    """Times each operation and reports it (and conflicts) to the optional observer."""

    def __init__(self, observer: StoreObserver | None) -> None:
        self._observer = observer

    @asynccontextmanager
    async def _timed(self, op: str) -> AsyncIterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._observer is not None:
                self._observer.op_seconds(op, time.perf_counter() - start)

    def _cas_result(self, ok: bool) -> bool:
        if not ok and self._observer is not None:
            self._observer.conflict()
        return ok


@dataclass
class _Entry:
    state: bytes
    log: bytearray
    version: int


class MemoryStore(_Observed):
    """In-process store with the semantics of ``RedisStore``; bytes are copied in and out."""

    def __init__(self, *, observer: StoreObserver | None = None) -> None:
        super().__init__(observer)
        self._users: dict[str, _Entry] = {}
        # The critical sections do not await today; the lock keeps each op atomic if one does.
        self._lock = asyncio.Lock()

    async def get_state(self, user_id: str) -> bytes | None:
        validate_user_id(user_id)
        async with self._timed("get_state"), self._lock:
            entry = self._users.get(user_id)
            return None if entry is None else entry.state

    async def read(
        self, user_id: str, *, with_log: bool = True, log_tail: int | None = None
    ) -> UserRecord:
        validate_user_id(user_id)
        _check_counts(log_tail=log_tail)
        async with self._timed("read"), self._lock:
            entry = self._users.get(user_id)
            if entry is None:
                return UserRecord(state=None, log=b"", version=0)
            log = b""
            if with_log and log_tail != 0:
                start = 0 if log_tail is None else max(0, len(entry.log) - log_tail * RECORD_SIZE)
                log = bytes(entry.log[start:])
            return UserRecord(state=entry.state, log=log, version=entry.version)

    async def write_if_unchanged(
        self, user_id: str, expected_version: int, state: bytes, append_log: bytes, log_cap: int
    ) -> bool:
        validate_user_id(user_id)
        _check_log(append_log)
        _check_counts(log_cap=log_cap)
        async with self._timed("write"), self._lock:
            entry = self._users.get(user_id)
            if (0 if entry is None else entry.version) != expected_version:
                return self._cas_result(False)
            log = bytearray() if entry is None else entry.log
            log += append_log
            del log[: max(0, len(log) - log_cap * RECORD_SIZE)]
            self._users[user_id] = _Entry(bytes(state), log, expected_version + 1)
            return self._cas_result(True)

    async def replace(self, user_id: str, expected_version: int, state: bytes, log: bytes) -> bool:
        validate_user_id(user_id)
        _check_log(log)
        async with self._timed("replace"), self._lock:
            entry = self._users.get(user_id)
            if (0 if entry is None else entry.version) != expected_version:
                return self._cas_result(False)
            self._users[user_id] = _Entry(bytes(state), bytearray(log), expected_version + 1)
            return self._cas_result(True)

    async def delete(self, user_id: str) -> bool:
        validate_user_id(user_id)
        async with self._timed("delete"), self._lock:
            return self._users.pop(user_id, None) is not None

    async def ping(self) -> None:
        async with self._timed("ping"):
            return

    async def close(self) -> None:
        return


def _redact(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    netloc += f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=netloc))


class RedisStore(_Observed):
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
        _check_counts(log_tail=log_tail)
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
        _check_log(append_log)
        _check_counts(log_cap=log_cap)
        args: list[bytes | int | str] = [
            expected_version,
            bytes(state),
            bytes(append_log),
            "append",
            log_cap * RECORD_SIZE,
        ]
        return await self._cas_call("write", user_id, args)

    async def replace(self, user_id: str, expected_version: int, state: bytes, log: bytes) -> bool:
        _check_log(log)
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


def create_store(
    redis_url: str | None, *, observer: StoreObserver | None = None, **redis_kw: Any
) -> Store:
    """``MemoryStore`` when ``redis_url`` is None or empty (``redis_kw`` then ignored), else an
    unconnected ``RedisStore(redis_url, observer=observer, **redis_kw)``."""
    if not redis_url:
        return MemoryStore(observer=observer)
    return RedisStore(redis_url, observer=observer, **redis_kw)
