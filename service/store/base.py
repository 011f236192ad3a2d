"""The store interface (docs/DESIGN.md §3, §4): Redis holds what is hot, per user a state blob, a
short tail of the event log, a compact dedup ring and a position record.

Every event a user ever had gets an absolute sequence number ``seq`` (1, 2, …). The whole
history lives in the durable tier (``service.history``); the store keeps only the *tail*: the
records not yet durable or not yet applied, i.e. the events ``(min(applied, durable), seq]``
(``length`` records ending at ``seq``). ``durable``: the events up to it are in the durable
tier. A user has one state per model version (docs/DESIGN.md §4, "Rollouts"), each with its
own covered position ``applied(version)`` (always ≤ ``durable``: an applier persists before it
applies); ``applied`` alone is the highest of them, so the tail drops an event once one version
applied it and a lagging version reads it from the durable tier. A version's state is advanced
only from its own position, so two versions never rewrite each other's states. ``delete``
starts the user again at seq 0 with a new ``gen`` and no state under any version.

- ``append_batch`` (the /ingest step, one atomic operation per user): dedup against the
  user's ring of its last ``dedup_window`` events (``service.store.dedup_ring``: duplicates,
  and ``refused`` events older than what the ring remembers), append the fresh records to the
  tail, return the counts, the new ``seq`` and the records not yet durable (this call's and
  any left by an earlier call that died before the durable write). A user whose hot keys are
  inconsistent (position, ring or tail lost or malformed) is answered ``repair``: nothing is
  written until ``restore`` rebuilt them from the durable tier.
- ``mark_durable``: the events up to ``seq`` are in the durable tier; the tail drops what is
  both durable and applied.
- ``read_log``: one consistent snapshot of a version's state and position and the tail's
  records (version None: the log and position only).
- ``commit_state``: write a version's state covering ``applied`` iff the user's fence (``gen``
  and the version's ``applied`` read before) did not move and ``applied ≤ durable``: a
  compare-and-set on the covered position, so two appliers, or an applier and a /rank rebuild,
  never overwrite each other, and a late writer after ``delete`` (which bumps ``gen``) cannot
  resurrect the user.
- ``retire``: delete every user's state under a version (``solar retire``).
- ``restore``: reset a user's position to ``seq`` (the durable tier's last event), its ring
  to one rebuilt from the durable tier and its tail to empty, iff the position still reads
  what the caller saw (``service.core.repair``).

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

from service.store.dedup_ring import DIGEST_SIZE, check_window
from service.store.eventlog import RECORD_SIZE, LogFormatError

__all__ = [
    "APPEND_REPAIR",
    "APPEND_UNKNOWN",
    "CHUNK_RECORDS",
    "AppendRequest",
    "AppendResult",
    "LogSlice",
    "ObservedStore",
    "StateCommit",
    "Store",
    "StoreObserver",
    "UserPosition",
    "check_append",
]


CHUNK_RECORDS = 256  # records per element of a tail (5 KB): appends and trims copy ≤ one


class AppendResult(NamedTuple):
    """Outcome of one user's append: exact counts and the user's position afterwards.

    ``undurable``: the records ``(durable, seq]`` (concatenated, oldest first) that the caller
    must write to the durable tier before acknowledging. ``repair``: nothing was written, the
    user's hot keys must first be rebuilt from the durable tier (the counts are then 0).
    ``unknown``: the user has no keys and ``create`` was not given: nothing was written (the
    caller first checks that the durable tier does not know the user either).
    """

    accepted: int
    duplicates: int
    refused: int  # older than the dedup ring remembers: not stored (dedup_ring's guarantee)
    seq: int  # sequence number of the user's newest event
    applied: int  # the highest sequence number a stored state (of any version) covers
    durable: int  # sequence number up to which the durable tier holds the events
    undurable: bytes = b""
    repair: bool = False
    unknown: bool = False


# The two appends that wrote nothing (their counts are 0): hot keys to repair, or no user.
APPEND_REPAIR = AppendResult(0, 0, 0, 0, 0, 0, repair=True)
APPEND_UNKNOWN = AppendResult(0, 0, 0, 0, 0, 0, unknown=True)


class AppendRequest(NamedTuple):
    """One user's part of an ``append_batch`` call: records and their 8-byte dedup digests
    (``dedup_ring.digests``)."""

    user_id: str
    records: bytes
    digests: bytes


class UserPosition(NamedTuple):
    """Where a user's state under one model version stands against its log."""

    seq: int
    applied: int

    @property
    def pending(self) -> int:
        """Events acknowledged but not yet applied to the state."""
        return self.seq - self.applied


class LogSlice(NamedTuple):
    """One consistent snapshot of a user, as ``read_log`` returns it.

    Attributes:
        state: the version's state blob, None when there is none (or no version was asked).
        seq, applied: the position, ``applied`` the version's (see the module docstring).
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
    durable: int = 0
    exists: bool = True  # False: the user has no position record

    @property
    def truncated(self) -> bool:
        """The tail does not hold every unapplied event (they are read from the durable tier
        instead, or the state is rebuilt from it)."""
        return (self.seq - self.applied) * RECORD_SIZE > len(self.records)

    @property
    def undurable(self) -> bytes:
        """The tail's records after ``durable`` (empty when the tail does not reach back)."""
        want = (self.seq - self.durable) * RECORD_SIZE
        return self.records[-want:] if 0 < want <= len(self.records) else b""


class StateCommit(NamedTuple):
    """One fenced state write of ``Store.commit_states`` (the arguments of ``commit_state``)."""

    user_id: str
    version: str
    state: bytes
    gen: int
    expected_applied: int
    applied: int


class StoreObserver(Protocol):
    """Receives store measurements; implemented in ``service.metrics``."""

    def op_seconds(self, op: str, seconds: float) -> None: ...

    def conflict(self) -> None: ...


@runtime_checkable
class Store(Protocol):
    """Storage of user states and event logs; see the module docstring for the semantics."""

    async def append_batch(
        self,
        requests: Sequence[AppendRequest],
        *,
        dedup_window: int,
        not_after_s: float | None = None,
        create: bool = False,
    ) -> list[AppendResult]:
        """Every user's append in one round trip (each user atomic). ``not_after_s`` (unix
        seconds): a user whose step would run later is refused (``StoreBusy``), so a sweeper
        that saw the user marked dirty before then sees what this call stored. ``create``:
        users without any key are created (else answered ``unknown``)."""
        ...

    async def mark_durable(self, marks: Sequence[tuple[str, int]]) -> None:
        """(user, seq): the durable tier holds the user's events up to seq (one round trip)."""
        ...

    async def restore(
        self, user_id: str, *, expected_seq: int | None, seq: int, ring: bytes
    ) -> bool:
        """Rebuild the user's hot keys (see the module docstring); False if the position moved
        (``expected_seq`` None: there was none)."""
        ...

    async def get_state(self, user_id: str, version: str) -> bytes | None: ...

    async def position(self, user_id: str, version: str) -> UserPosition: ...

    async def read_log(
        self, user_id: str, version: str | None, *, unapplied_only: bool
    ) -> LogSlice: ...

    async def read_logs(
        self, reads: Sequence[tuple[str, str | None]], *, unapplied_only: bool
    ) -> list[LogSlice]:
        """``read_log`` of every (user, version), in order, in one round trip (each user's
        snapshot consistent on its own)."""
        ...

    async def commit_state(
        self,
        user_id: str,
        version: str,
        state: bytes,
        *,
        gen: int,
        expected_applied: int,
        applied: int,
    ) -> bool: ...

    async def commit_states(self, commits: Sequence[StateCommit]) -> list[bool]:
        """``commit_state`` of every commit, in order, in one round trip; each is fenced on
        its own (a lost fence is False for that commit alone)."""
        ...

    async def delete(self, user_id: str) -> bool: ...

    async def retire(self, version: str) -> int:
        """Delete every user's state under ``version``; the number deleted."""
        ...

    async def state_counts(self) -> dict[str, int]:
        """Users with a state, per model version (kept at creation and deletion)."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def check_append(records: bytes, digests: bytes, dedup_window: int) -> int:
    """The number of records of one user's append; ValueError if the blobs disagree."""
    if len(records) % RECORD_SIZE:
        raise LogFormatError(len(records))
    n = len(records) // RECORD_SIZE
    if len(digests) != n * DIGEST_SIZE:
        raise ValueError(f"{len(digests)} digest bytes for {n} records")
    check_window(dedup_window)
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
