"""Per-user asyncio locks: one writer per user inside a process.

Concurrent ingests for one (hot) user in the same process would otherwise race on the store's
compare-and-set and burn a whole read → update → write per lost race. Queueing them on a
lock costs nothing; compare-and-set still arbitrates between replicas. Locks exist only while
held or awaited, so memory stays bounded by the number of users in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["UserLocks"]


class UserLocks:
    """A lock per key, created on first use and dropped when its last holder leaves."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, int] = {}

    def __len__(self) -> int:
        """Keys whose lock is held or awaited."""
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._holders[key] = self._holders.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._holders[key] -= 1
            if self._holders[key] == 0:
                del self._holders[key], self._locks[key]
