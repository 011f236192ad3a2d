"""The embedded store: ``RedisStore``'s semantics in one process (not shared, not persistent).

Each operation runs without awaiting, so it is atomic on the event loop like a Lua script is
in Redis. The log is a list of chunks so that trimming its head never copies it whole.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from service.store.base import (
    AppendRequest,
    AppendResult,
    LogSlice,
    ObservedStore,
    StoreObserver,
    UserPosition,
    check_append,
)
from service.store.eventlog import IDENTITY_SIZE, RECORD_SIZE
from service.store.keys import validate_user_id

__all__ = ["MemoryStore"]

CHUNK_RECORDS = 256  # records per log chunk (as in RedisStore)


@dataclass
class _User:
    state: bytes | None = None
    seq: int = 0
    applied: int = 0
    gen: int = 0
    chunks: deque[bytes] = field(default_factory=deque)
    length: int = 0  # records held by ``chunks``
    seen: dict[bytes, int] = field(default_factory=dict)  # identity → seq
    order: deque[tuple[int, bytes]] = field(default_factory=deque)  # (seq, identity), oldest first

    def append(self, data: bytes, log_cap: int) -> None:
        chunk = CHUNK_RECORDS * RECORD_SIZE
        if self.chunks and len(self.chunks[-1]) < chunk:
            room = chunk - len(self.chunks[-1])
            self.chunks[-1] += data[:room]
            data = data[room:]
        for start in range(0, len(data), chunk):
            self.chunks.append(data[start : start + chunk])
        while self.length > log_cap:
            excess = self.length - log_cap
            head = len(self.chunks[0]) // RECORD_SIZE
            if head <= excess:
                self.chunks.popleft()
                self.length -= head
            else:
                self.chunks[0] = self.chunks[0][excess * RECORD_SIZE :]
                self.length = log_cap

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

    async def append_events(
        self,
        user_id: str,
        records: bytes,
        identities: bytes,
        *,
        log_cap: int,
        dedup_window: int,
    ) -> AppendResult:
        validate_user_id(user_id)
        n = check_append(records, identities, log_cap, dedup_window)
        async with self._timed("append"):
            user = self._users.setdefault(user_id, _User())
            fresh: list[bytes] = []
            for i in range(n):
                identity = identities[i * IDENTITY_SIZE : (i + 1) * IDENTITY_SIZE]
                if identity in user.seen:
                    continue
                user.seq += 1
                user.seen[identity] = user.seq
                user.order.append((user.seq, identity))
                fresh.append(records[i * RECORD_SIZE : (i + 1) * RECORD_SIZE])
            if fresh:
                user.length += len(fresh)
                user.append(b"".join(fresh), log_cap)
                while user.order and user.order[0][0] <= user.seq - dedup_window:
                    seq, identity = user.order.popleft()
                    if user.seen.get(identity) == seq:
                        del user.seen[identity]
            return AppendResult(len(fresh), n - len(fresh), user.seq, user.applied)

    async def append_batch(
        self, requests: Sequence[AppendRequest], *, log_cap: int, dedup_window: int
    ) -> list[AppendResult]:
        return [
            await self.append_events(
                r.user_id, r.records, r.identities, log_cap=log_cap, dedup_window=dedup_window
            )
            for r in requests
        ]

    async def get_state(self, user_id: str) -> bytes | None:
        validate_user_id(user_id)
        async with self._timed("get_state"):
            user = self._users.get(user_id)
            return None if user is None else user.state

    async def position(self, user_id: str) -> UserPosition:
        validate_user_id(user_id)
        async with self._timed("position"):
            user = self._users.get(user_id)
            return UserPosition(0, 0) if user is None else UserPosition(user.seq, user.applied)

    async def read_log(self, user_id: str, *, unapplied_only: bool) -> LogSlice:
        validate_user_id(user_id)
        async with self._timed("read_log"):
            user = self._users.get(user_id)
            if user is None:
                return LogSlice(None, 0, 0, 0, 0, b"")
            unapplied = user.seq - user.applied
            want = min(user.length, unapplied) if unapplied_only else user.length
            return LogSlice(
                user.state, user.seq, user.applied, user.gen, user.length, user.tail(want)
            )

    async def commit_state(
        self, user_id: str, state: bytes, *, gen: int, expected_applied: int, applied: int
    ) -> bool:
        validate_user_id(user_id)
        async with self._timed("commit"):
            user = self._users.get(user_id)
            current = (0, 0, 0) if user is None else (user.gen, user.applied, user.seq)
            if current[:2] != (gen, expected_applied) or current[2] < applied or user is None:
                return self._cas_result(False)
            user.state, user.applied = bytes(state), applied
            return self._cas_result(True)

    async def delete(self, user_id: str) -> bool:
        """Forget the user's state, log and dedup data; its position stays as a fence."""
        validate_user_id(user_id)
        async with self._timed("delete"):
            user = self._users.get(user_id)
            if user is None:
                return False
            existed = user.state is not None or user.length > 0
            self._users[user_id] = _User(seq=user.seq, applied=user.seq, gen=user.gen + 1)
            return existed

    async def ping(self) -> None:
        async with self._timed("ping"):
            return

    async def close(self) -> None:
        return
