"""The embedded history: ``HistoryStore`` semantics in one process (not shared, not durable).

Each call runs without awaiting, so an ``append`` is atomic on the event loop. A user's
history is a list of the chunks as appended (never copied on append); ``read`` joins them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from service.history.base import HistoryChunk, HistoryGap, HistorySlice, normalize_chunks
from service.store.eventlog import RECORD_SIZE
from service.store.keys import validate_user_id

__all__ = ["MemoryHistory"]


@dataclass
class _History:
    parts: list[bytes] = field(default_factory=list)
    last_seq: int = 0


class MemoryHistory:
    """In-process ``HistoryStore``; bytes are copied in and out."""

    def __init__(self) -> None:
        self._users: dict[str, _History] = {}

    async def append(self, chunks: Sequence[HistoryChunk]) -> None:
        runs = normalize_chunks(chunks)
        for run in runs:  # check every run before storing any: all or nothing
            stored = self._last(run.user_id)
            if run.first_seq > stored + 1:
                raise HistoryGap(run.user_id, run.first_seq, stored)
        for run in runs:
            history = self._users.setdefault(run.user_id, _History())
            if run.last_seq <= history.last_seq:
                continue
            skip = (history.last_seq + 1 - run.first_seq) * RECORD_SIZE
            history.parts.append(run.records[skip:])
            history.last_seq = run.last_seq

    async def read(self, user_id: str, *, after_seq: int = 0) -> HistorySlice:
        validate_user_id(user_id)
        after_seq = max(after_seq, 0)
        history = self._users.get(user_id)
        if history is None or history.last_seq <= after_seq:
            return HistorySlice(b"", after_seq, after_seq + 1)
        records = b"".join(history.parts)[after_seq * RECORD_SIZE :]
        return HistorySlice(records, history.last_seq, after_seq + 1)

    async def last_seq(self, user_id: str) -> int:
        validate_user_id(user_id)
        return self._last(user_id)

    async def users(self, *, after: str = "", limit: int = 1_000) -> list[str]:
        known = sorted(u for u, h in self._users.items() if h.last_seq > 0 and u > after)
        return known[:limit]

    async def delete(self, user_id: str) -> None:
        validate_user_id(user_id)
        self._users.pop(user_id, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _last(self, user_id: str) -> int:
        history = self._users.get(user_id)
        return 0 if history is None else history.last_seq
