"""Per-user storage: a LowRankState blob, a capped event log and a compare-and-set version.

Two implementations of one ``Store`` protocol with the same semantics:

- ``RedisStore`` (production, in ``service.redis_store``): redis-py asyncio over a blocking
  connection pool. The three keys of a user share a hash tag (``service.keys``); writes are
  one Lua script, so the compare-and-set is atomic across processes and replicas.
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
from typing import Any, Protocol, runtime_checkable

from service.eventlog import RECORD_SIZE, LogFormatError
from service.keys import validate_user_id

__all__ = [
    "MemoryStore",
    "Store",
    "StoreError",
    "StoreObserver",
    "StoreUnavailable",
    "UserRecord",
    "create_store",
]

logger = logging.getLogger(__name__)


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


def create_store(
    redis_url: str | None, *, observer: StoreObserver | None = None, **redis_kw: Any
) -> Store:
    """``MemoryStore`` when ``redis_url`` is None or empty (``redis_kw`` then ignored), else an
    unconnected ``RedisStore(redis_url, observer=observer, **redis_kw)``."""
    if not redis_url:
        return MemoryStore(observer=observer)
    from service.redis_store import RedisStore  # lazy: service.redis_store imports this module

    return RedisStore(redis_url, observer=observer, **redis_kw)
