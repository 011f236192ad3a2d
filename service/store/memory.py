"""The embedded store: ``RedisStore``'s semantics in one process (not shared, not persistent).

Each operation runs without awaiting, so it is atomic on the event loop like a Lua script is
in Redis. The tail is a list of chunks so that trimming its head never copies it whole; the
dedup ring is ``DedupRing``, the Python twin of the Redis string.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from service.errors import StoreBusy
from service.store.base import (
    APPEND_REPAIR,
    APPEND_UNKNOWN,
    CHUNK_RECORDS,
    AppendRequest,
    AppendResult,
    LogSlice,
    ObservedStore,
    StateCommit,
    StoreObserver,
    UserPosition,
    check_append,
)
from service.store.dedup_ring import DedupRing
from service.store.eventlog import RECORD_SIZE, decode_log
from service.store.keys import validate_model_version, validate_user_id

__all__ = ["MemoryStore"]


@dataclass
class _User:
    states: dict[str, bytes] = field(default_factory=dict)  # model version → state blob
    applied_by: dict[str, int] = field(default_factory=dict)  # model version → covered seq
    seq: int = 0
    applied: int = 0  # the highest of applied_by: what the tail may drop
    durable: int = 0
    gen: int = 0
    chunks: deque[bytes] = field(default_factory=deque)
    length: int = 0  # records held by ``chunks``: the events (seq - length, seq]
    ring: DedupRing | None = None

    def push(self, data: bytes) -> None:
        """Append records to the tail."""
        self.length += len(data) // RECORD_SIZE
        chunk = CHUNK_RECORDS * RECORD_SIZE
        if self.chunks and len(self.chunks[-1]) < chunk:
            room = chunk - len(self.chunks[-1])
            self.chunks[-1] += data[:room]
            data = data[room:]
        for start in range(0, len(data), chunk):
            self.chunks.append(data[start : start + chunk])

    def trim(self) -> None:
        """Keep the events after min(applied, durable) only."""
        keep = self.seq - min(self.applied, self.durable)
        while self.length > keep:
            excess = self.length - keep
            head = len(self.chunks[0]) // RECORD_SIZE
            if head <= excess:
                self.chunks.popleft()
                self.length -= head
            else:
                self.chunks[0] = self.chunks[0][excess * RECORD_SIZE :]
                self.length = keep

    def tail(self, count: int) -> bytes:
        """The newest ``count`` records (≤ length)."""
        if count <= 0:
            return b""
        parts: list[bytes] = []
        need = count * RECORD_SIZE
        for chunk in reversed(self.chunks):
            parts.append(chunk)
            need -= len(chunk)
            if need <= 0:
                break
        return b"".join(reversed(parts))[-count * RECORD_SIZE :]


class MemoryStore(ObservedStore):
    """In-process store with the semantics of ``RedisStore``; bytes are copied in and out."""

    def __init__(self, *, observer: StoreObserver | None = None) -> None:
        super().__init__(observer)
        self._users: dict[str, _User] = {}
        self._state_counts: dict[str, int] = {}

    def _append(self, request: AppendRequest, dedup_window: int, create: bool) -> AppendResult:
        validate_user_id(request.user_id)
        if request.user_id not in self._users and not create:
            return APPEND_UNKNOWN
        user = self._users.setdefault(request.user_id, _User())
        if user.ring is None:
            if user.seq > 0:
                return APPEND_REPAIR
            user.ring = DedupRing(dedup_window)
        elif user.ring.window != dedup_window:
            return APPEND_REPAIR
        records = decode_log(request.records)
        counts = user.ring.admit(user.seq, request.digests, records["ts"])
        if counts.fresh:
            user.push(records[counts.fresh].tobytes())
            user.seq += len(counts.fresh)
        undurable = user.tail(user.seq - user.durable)
        return AppendResult(
            len(counts.fresh),
            counts.duplicates,
            counts.refused,
            user.seq,
            user.applied,
            user.durable,
            undurable,
        )

    async def append_batch(
        self,
        requests: Sequence[AppendRequest],
        *,
        dedup_window: int,
        not_after_s: float | None = None,
        create: bool = False,
    ) -> list[AppendResult]:
        for r in requests:
            check_append(r.records, r.digests, dedup_window)
        if not_after_s is not None and time.time() > not_after_s:
            raise StoreBusy(1)
        async with self._timed("append_batch"):
            return [self._append(r, dedup_window, create) for r in requests]

    async def mark_durable(self, marks: Sequence[tuple[str, int]]) -> None:
        async with self._timed("mark_durable"):
            for user_id, seq in marks:
                user = self._users.get(user_id)
                if user is not None and seq > user.durable:
                    user.durable = min(seq, user.seq)
                    user.trim()

    async def get_state(self, user_id: str, version: str) -> bytes | None:
        validate_user_id(user_id)
        validate_model_version(version)
        async with self._timed("get_state"):
            user = self._users.get(user_id)
            return None if user is None else user.states.get(version)

    async def position(self, user_id: str, version: str) -> UserPosition:
        validate_user_id(user_id)
        validate_model_version(version)
        async with self._timed("position"):
            user = self._users.get(user_id)
            if user is None:
                return UserPosition(0, 0)
            return UserPosition(user.seq, user.applied_by.get(version, 0))

    async def read_log(
        self, user_id: str, version: str | None, *, unapplied_only: bool
    ) -> LogSlice:
        validate_user_id(user_id)
        if version is not None:
            validate_model_version(version)
        async with self._timed("read_log"):
            user = self._users.get(user_id)
            if user is None:
                return LogSlice(None, 0, 0, 0, 0, b"", exists=False)
            applied = 0 if version is None else user.applied_by.get(version, 0)
            state = None if version is None else user.states.get(version)
            unapplied = user.seq - applied
            want = min(user.length, unapplied) if unapplied_only else user.length
            return LogSlice(
                state,
                user.seq,
                applied,
                user.gen,
                user.length,
                user.tail(want),
                durable=user.durable,
            )

    async def read_logs(
        self, reads: Sequence[tuple[str, str | None]], *, unapplied_only: bool
    ) -> list[LogSlice]:
        return [await self.read_log(u, v, unapplied_only=unapplied_only) for u, v in reads]

    async def commit_state(
        self,
        user_id: str,
        version: str,
        state: bytes,
        *,
        gen: int,
        expected_applied: int,
        applied: int,
    ) -> bool:
        validate_user_id(user_id)
        validate_model_version(version)
        async with self._timed("commit"):
            user = self._users.get(user_id)
            if (
                user is None
                or (user.gen, user.applied_by.get(version, 0)) != (gen, expected_applied)
                or user.seq < applied
                or applied > user.durable
            ):
                return self._cas_result(False)
            if version not in user.applied_by:
                self._state_counts[version] = self._state_counts.get(version, 0) + 1
            user.states[version], user.applied_by[version] = bytes(state), applied
            user.applied = max(user.applied, applied)
            user.trim()
            return self._cas_result(True)

    async def commit_states(self, commits: Sequence[StateCommit]) -> list[bool]:
        return [
            await self.commit_state(
                c.user_id,
                c.version,
                c.state,
                gen=c.gen,
                expected_applied=c.expected_applied,
                applied=c.applied,
            )
            for c in commits
        ]

    async def restore(
        self, user_id: str, *, expected_seq: int | None, seq: int, ring: bytes
    ) -> bool:
        validate_user_id(user_id)
        async with self._timed("restore"):
            user = self._users.get(user_id)
            if (None if user is None else user.seq) != expected_seq:
                return False
            if user is None:
                user = self._users[user_id] = _User()
            for version, covered in list(user.applied_by.items()):
                if covered > seq:  # the state covers events the durable tier lacks
                    self._forget_state(user, version)
            user.applied = max(user.applied_by.values(), default=0)
            user.seq = user.durable = seq
            user.chunks.clear()
            user.length = 0
            user.ring = DedupRing.from_bytes(ring)
            return True

    async def delete(self, user_id: str) -> bool:
        """Forget the user's states, tail and ring; its position stays as a fence."""
        validate_user_id(user_id)
        async with self._timed("delete"):
            user = self._users.get(user_id)
            if user is None:
                return False
            existed = bool(user.states) or user.length > 0 or user.ring is not None
            for version in list(user.applied_by):
                self._forget_state(user, version)
            self._users[user_id] = _User(gen=user.gen + 1)
            return existed

    async def retire(self, version: str) -> int:
        validate_model_version(version)
        async with self._timed("retire"):
            deleted = 0
            for user in self._users.values():
                deleted += version in user.states
                if version in user.applied_by:
                    self._forget_state(user, version)
            self._state_counts.pop(version, None)
            return deleted

    async def state_counts(self) -> dict[str, int]:
        return dict(self._state_counts)

    def _forget_state(self, user: _User, version: str) -> None:
        user.states.pop(version, None)
        del user.applied_by[version]
        self._state_counts[version] = self._state_counts.get(version, 0) - 1

    async def ping(self) -> None:
        async with self._timed("ping"):
            return

    async def close(self) -> None:
        return
