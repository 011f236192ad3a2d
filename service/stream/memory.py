"""The embedded ingest stream: ``RedisStream``'s semantics inside one process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from service.store.keys import partition_of
from service.stream.base import Notice, dirty_members

__all__ = ["MemoryStream"]


@dataclass
class _Partition:
    entries: dict[str, Notice] = field(default_factory=dict)  # not yet acknowledged
    undelivered: list[str] = field(default_factory=list)
    pending: dict[str, str] = field(default_factory=dict)  # entry id → consumer
    lease: tuple[str, float] | None = None  # (holder, expires at, monotonic s)
    dirty: dict[str, float] = field(default_factory=dict)  # user → mark (unix s)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStream:
    """In-process partitions with one consumer group; see ``service.stream.base``."""

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be ≥ 1, got {partitions}")
        self.partitions = partitions
        self._parts = [_Partition() for _ in range(partitions)]
        self._next_id = 0
        self._alive: dict[str, float] = {}

    async def post(self, user_id: str, seq: int, posted_s: float, token: str = "") -> None:
        k = partition_of(user_id, self.partitions)
        self._next_id += 1
        entry_id = f"{self._next_id}-0"
        part = self._parts[k]
        part.entries[entry_id] = Notice(k, entry_id, user_id, seq, posted_s, token)
        part.undelivered.append(entry_id)
        part.arrived.set()

    async def post_batch(
        self, notices: Sequence[tuple[str, int]], posted_s: float, token: str = ""
    ) -> None:
        for user_id, seq in notices:
            await self.post(user_id, seq, posted_s, token)

    async def acquire(self, partition: int, consumer: str, lease_s: float) -> bool:
        part = self._parts[partition]
        now = time.monotonic()
        if part.lease is None or part.lease[0] == consumer or part.lease[1] <= now:
            part.lease = (consumer, now + lease_s)
            return True
        return False

    async def release(self, partition: int, consumer: str) -> None:
        part = self._parts[partition]
        if part.lease is not None and part.lease[0] == consumer:
            part.lease = None

    async def read(self, partition: int, consumer: str, count: int, block_s: float) -> list[Notice]:
        part = self._parts[partition]
        if not part.undelivered and block_s > 0:
            part.arrived.clear()
            try:
                await asyncio.wait_for(part.arrived.wait(), block_s)
            except TimeoutError:
                return []
        taken, part.undelivered = part.undelivered[:count], part.undelivered[count:]
        for entry_id in taken:
            part.pending[entry_id] = consumer
        return [part.entries[e] for e in taken]

    async def claim(self, partition: int, consumer: str, count: int) -> list[Notice]:
        part = self._parts[partition]
        taken = list(part.pending)[:count]  # every pending entry, one's own included
        for entry_id in taken:
            part.pending[entry_id] = consumer
        return [part.entries[e] for e in taken]

    async def ack(
        self,
        entries: Mapping[int, Sequence[str]],
        unmark: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        for partition, entry_ids in entries.items():
            part = self._parts[partition]
            for entry_id in entry_ids:
                part.pending.pop(entry_id, None)
                part.entries.pop(entry_id, None)
        for partition, members in (unmark or {}).items():
            for member in members:
                self._parts[partition].dirty.pop(member, None)

    async def backlog(self, partition: int) -> int:
        return len(self._parts[partition].entries)

    async def heartbeat(self, consumer: str, ttl_s: float) -> int:
        now = time.monotonic()
        self._alive[consumer] = now
        self._alive = {c: t for c, t in self._alive.items() if t > now - ttl_s}
        return len(self._alive)

    async def leave(self, consumer: str) -> None:
        self._alive.pop(consumer, None)

    async def mark(self, user_ids: Sequence[str], now_s: float, token: str = "") -> None:
        for k, members in dirty_members(user_ids, token, self.partitions).items():
            self._parts[k].dirty.update(dict.fromkeys(members, now_s))

    async def dirty(self, partition: int, before_s: float, count: int) -> list[tuple[str, float]]:
        marks = sorted(self._parts[partition].dirty.items(), key=lambda m: m[1])
        return [m for m in marks if m[1] <= before_s][:count]

    async def clean(self, partition: int, marks: Sequence[tuple[str, float]]) -> None:
        dirty = self._parts[partition].dirty
        for member, mark in marks:
            if dirty.get(member) == mark:
                del dirty[member]

    async def dirty_count(self, partition: int) -> int:
        return len(self._parts[partition].dirty)

    async def close(self) -> None:
        return
