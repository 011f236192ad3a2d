"""The store interface: a LowRankState blob, a capped event log and a compare-and-set version
per user.

Two implementations of one ``Store`` protocol with the same semantics:

- ``RedisStore`` (production, ``service.store.redis_store``): redis-py asyncio over a
  blocking connection pool. The three keys of a user share a hash tag (``service.store.keys``);
  writes are one Lua script, so the compare-and-set is atomic across processes and replicas.
- ``MemoryStore`` (embedded default, ``service.store.memory``): a dict under an asyncio lock.

Versions start at 0 for an unknown user and grow by one per successful write. ``delete``
drops the version too, so a writer holding a version read before a delete may succeed against
a re-created user that reached the same version (ABA); that needs a delete and as many
re-writes between one read and its write.

Latency (seconds, per op name) and CAS conflicts go to an optional ``StoreObserver`` so
that every Prometheus object stays in ``service.metrics``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from service.store.eventlog import RECORD_SIZE, LogFormatError

__all__ = ["ObservedStore", "Store", "StoreObserver", "UserRecord", "check_counts", "check_log"]


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


def check_log(blob: bytes) -> None:
    if len(blob) % RECORD_SIZE:
        raise LogFormatError(len(blob))


def check_counts(log_tail: int | None = None, log_cap: int = 0) -> None:
    if log_tail is not None and log_tail < 0:
        raise ValueError(f"log_tail must be >= 0 or None, got {log_tail}")
    if log_cap < 0:
        raise ValueError(f"log_cap must be >= 0, got {log_cap}")


class ObservedStore:
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
