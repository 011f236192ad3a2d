"""When to compact: count each user's small appends, compact users in the background.

A process counts the small segments it appended per user; at ``after`` of them the user is
queued, and one background task compacts queued users ``batch`` at a time (one transaction,
so one commit, for the batch: compacting user by user would wait for a disk flush each).
The counts are hints held in memory (at most ``max_tracked`` users, then dropped): a
process that restarts, or a user spread over many processes, is compacted later than it
could be, never wrongly, since ``compact`` reads what is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from service.errors import StoreError

__all__ = ["BackgroundCompactor"]

logger = logging.getLogger(__name__)


class BackgroundCompactor:
    """Calls ``compact(*users)`` in the background for users with ``after`` small appends.

    Args:
        compact: merges the given users' small segments (``PostgresHistory.compact``).
        after: small appends of a user before it is queued; 0 turns the compactor off.
        batch: most users per ``compact`` call.
        max_tracked: most users counted at once (the counts are cleared beyond it).
    """

    def __init__(
        self,
        compact: Callable[..., Awaitable[int]],
        *,
        after: int,
        batch: int = 64,
        max_tracked: int = 100_000,
    ) -> None:
        self._compact = compact
        self._after = after
        self._batch = batch
        self._max_tracked = max_tracked
        self._counts: dict[str, int] = {}  # user → small segments appended since compacted
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def note(self, users: Sequence[str]) -> None:
        """Count one small append for each of ``users``; queue those reaching ``after``."""
        if self._after <= 0:
            return
        if len(self._counts) > self._max_tracked:
            self._counts.clear()
        for user_id in users:
            count = self._counts.get(user_id, 0) + 1
            self._counts[user_id] = count
            if count == self._after:
                self._queue.put_nowait(user_id)
        if not self._queue.empty() and self._task is None:
            self._task = asyncio.create_task(self._run())

    def forget(self, users: Sequence[str]) -> None:
        """The users were compacted or deleted: count from zero again."""
        for user_id in users:
            self._counts.pop(user_id, None)

    async def _run(self) -> None:
        while True:
            users = [await self._queue.get()]
            while not self._queue.empty() and len(users) < self._batch:
                users.append(self._queue.get_nowait())
            try:
                await self._compact(*users)
            except StoreError as exc:  # unavailable or corrupt: queued again after `after`
                self.forget(users)
                logger.warning("history: compacting %d users failed: %s", len(users), exc)
            finally:
                for _ in users:
                    self._queue.task_done()

    async def idle(self) -> None:
        """Wait until the users queued so far are compacted (or failed)."""
        await self._queue.join()

    async def close(self) -> None:
        """Stop the background task (a compaction in flight is rolled back)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
