"""The store interface (DESIGN §3, §4): per user a state blob, a capped event log, a dedup set
and a position record.

Every event a user ever had gets an absolute sequence number ``seq`` (1, 2, …). The log keeps
the newest ``log_cap`` records, so it holds the events ``(seq - len, seq]``; the state covers
the prefix up to ``applied``, so ``seq - applied`` events are acknowledged but not yet applied.

- ``append_events`` (the /ingest step, one atomic operation per user): drop events whose
  identity is among the user's last ``dedup_window`` events (or earlier in the same call),
  append the fresh records, trim the log's head (never copying the whole log), return the
  counts and the new ``seq``. O(1) in the history length per event.
- ``read_log``: one consistent snapshot of state, position and the unapplied (or all) records.
- ``commit_state``: write a state covering ``applied`` iff the user's fence (``gen`` and the
  ``applied`` read before) did not move: a compare-and-set on the covered position, so two
  appliers, or an applier and a /rank rebuild, never overwrite each other, and a late writer
  after ``delete`` (which bumps ``gen``) cannot resurrect the user.

Two implementations with the same semantics: ``RedisStore`` (``redis_store``: one Lua script
per operation, all keys of a user in one hash slot, so it works on Redis Cluster) and
``MemoryStore`` (``memory``: the embedded default). Latency (seconds, per op) and lost
compare-and-sets go to an optional ``StoreObserver``, so every Prometheus object stays in
``service.metrics``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import NamedTuple, Protocol, runtime_checkable

from service.store.eventlog import IDENTITY_SIZE, RECORD_SIZE, LogFormatError

__all__ = [
    "AppendRequest",
    "AppendResult",
    "LogSlice",
    "ObservedStore",
    "Store",
    "StoreObserver",
    "UserPosition",
    "check_append",
]


class AppendResult(NamedTuple):
    """Outcome of ``append_events``: exact counts and the user's position afterwards."""

    accepted: int
    duplicates: int
    seq: int  # sequence number of the user's newest event
    applied: int  # sequence number the stored state covers


class AppendRequest(NamedTuple):
    """One user's part of an ``append_batch`` call."""

    user_id: str
    records: bytes
    identities: bytes


class UserPosition(NamedTuple):
    """Where a user's state stands against its log."""

    seq: int
    applied: int

    @property
    def pending(self) -> int:
        """Events acknowledged but not yet applied to the state."""
        return self.seq - self.applied


class LogSlice(NamedTuple):
    """One consistent snapshot of a user, as ``read_log`` returns it.

    Attributes:
        state: the state blob, None when there is none.
        seq, applied: the position (see the module docstring).
        gen: the user's generation; ``delete`` bumps it (part of the write fence).
        length: records the (capped) log holds: the events ``(seq - length, seq]``.
        records: concatenated 20-byte records, oldest first: those after ``applied`` (as many
            as the log still holds) or the whole log, as asked.
    """

    state: bytes | None
    seq: int
    applied: int
    gen: int
    length: int
    records: bytes

    @property
    def truncated(self) -> bool:
        """Some unapplied events were trimmed from the log before being applied (the state
        must then be rebuilt from what the log holds)."""
        return self.seq - self.applied > self.length


class StoreObserver(Protocol):
    """Receives store measurements; implemented in ``service.metrics``."""

    def op_seconds(self, op: str, seconds: float) -> None: ...

    def conflict(self) -> None: ...


@runtime_checkable
class Store(Protocol):
    """Storage of user states and event logs; see the module docstring for the semantics."""

    async def append_events(
        self,
        user_id: str,
        records: bytes,
        identities: bytes,
        *,
        log_cap: int,
        dedup_window: int,
    ) -> AppendResult: ...

    async def append_batch(
        self, requests: Sequence[AppendRequest], *, log_cap: int, dedup_window: int
    ) -> list[AppendResult]:
        """``append_events`` for many users in one round trip (each user still atomic)."""
        ...

    async def get_state(self, user_id: str) -> bytes | None: ...

    async def position(self, user_id: str) -> UserPosition: ...

    async def read_log(self, user_id: str, *, unapplied_only: bool) -> LogSlice: ...

    async def commit_state(
        self, user_id: str, state: bytes, *, gen: int, expected_applied: int, applied: int
    ) -> bool: ...

    async def delete(self, user_id: str) -> bool: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def check_append(records: bytes, identities: bytes, log_cap: int, dedup_window: int) -> int:
    """The number of records in an ``append_events`` call; ValueError if the blobs disagree."""
    if len(records) % RECORD_SIZE:
        raise LogFormatError(len(records))
    n = len(records) // RECORD_SIZE
    if len(identities) != n * IDENTITY_SIZE:
        raise ValueError(f"{len(identities)} identity bytes for {n} records")
    if log_cap < 1 or dedup_window < 0:
        raise ValueError(f"log_cap must be ≥ 1 and dedup_window ≥ 0: {log_cap}, {dedup_window}")
    return n


class ObservedStore:
    """Times each operation and reports it (and lost compare-and-sets) to the observer."""

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
