"""The embedded store: a dict with the semantics of ``RedisStore`` (not shared, not persistent)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from service.store.base import ObservedStore, StoreObserver, UserRecord, check_counts, check_log
from service.store.eventlog import RECORD_SIZE
from service.store.keys import validate_user_id

__all__ = ["MemoryStore"]


@dataclass
class _Entry:
    state: bytes
    log: bytearray
    version: int


class MemoryStore(ObservedStore):
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
        check_counts(log_tail=log_tail)
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
        check_log(append_log)
        check_counts(log_cap=log_cap)
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
        check_log(log)
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
