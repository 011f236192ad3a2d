"""When to compact: count each user's events in small appends, compact users in the background.

A process counts the events it appended per user in small segments; at ``after`` of them the
user is queued, and so is a user with fewer whose last append is ``idle_s`` old (else the last
few small appends of every user would stay small: a fifth of a 100-event user's history).
Counting events, not appends, keeps the work per event bounded whatever the body size: an
/ingest body spread over 200 users appends ~5 events per user, and compacting after every
few such appends re-encoded a user's growing small segment over and over (29% of a serve
process's CPU under ingest load, before this and ``segments.plan_compaction``'s tiers). One
background task compacts queued users ``batch`` at a time (one transaction, so one commit,
for the batch: compacting user by user would wait for a disk flush each).
The counts are hints held in memory (at most ``max_tracked`` users, then dropped): a
process that restarts, or a user spread over many processes, is compacted later than it
could be, never wrongly, since ``compact`` reads what is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from service.errors import StoreError

__all__ = ["BackgroundCompactor"]

logger = logging.getLogger(__name__)


class BackgroundCompactor:
    """Calls ``compact(*users)`` in the background for users with ``after`` events in small
    appends.

    Args:
        compact: merges the given users' small segments (``PostgresHistory.compact``).
        after: events of a user in small appends before it is queued; 0 turns the compactor
            off.
        idle_s: a user with fewer is queued this long after its last small append.
        batch: most users per ``compact`` call.
        max_tracked: most users counted at once (the counts are cleared beyond it).
    """

    def __init__(
        self,
        compact: Callable[..., Awaitable[int]],
        *,
        after: int,
        idle_s: float = 10.0,
        batch: int = 64,
        max_tracked: int = 100_000,
    ) -> None:
        self._compact = compact
        self._after = after
        self._idle_s = idle_s
        self._batch = batch
        self._max_tracked = max_tracked
        # user → (events appended in small segments since compacted, monotonic time of the last)
        self._counts: dict[str, tuple[int, float]] = {}
        self._queued: set[str] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    def _enqueue(self, user_id: str) -> None:
        if user_id not in self._queued:
            self._queued.add(user_id)
            self._queue.put_nowait(user_id)

    def note(self, appends: Sequence[tuple[str, int]]) -> None:
        """Count the small appends ``(user, events)``; queue the users reaching ``after``."""
        if self._after <= 0:
            return
        if len(self._counts) > self._max_tracked:
            self._counts.clear()
        now = time.monotonic()
        for user_id, events in appends:
            count = self._counts.get(user_id, (0, now))[0] + events
            self._counts[user_id] = (count, now)
            if count >= self._after:
                self._enqueue(user_id)
        if appends and not self._tasks:
            self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._sweep())]

    def forget(self, users: Sequence[str]) -> None:
        """The users were compacted or deleted: count from zero again."""
        for user_id in users:
            self._counts.pop(user_id, None)

    async def _sweep(self) -> None:
        """Queue the users whose last small append is ``idle_s`` old."""
        while True:
            await asyncio.sleep(self._idle_s / 4)
            oldest = time.monotonic() - self._idle_s
            for user_id, (_, last) in list(self._counts.items()):
                if last <= oldest:
                    self._enqueue(user_id)

    async def _run(self) -> None:
        while True:
            users = [await self._queue.get()]
            while not self._queue.empty() and len(users) < self._batch:
                users.append(self._queue.get_nowait())
            self._queued.difference_update(users)
            try:
                await self._compact(*users)
            except StoreError as exc:  # unavailable or corrupt: queued again after `after`
                self.forget(users)
                logger.warning("history: compacting %d users failed: %s", len(users), exc)
            except Exception:  # a bug in one compaction must not end compaction for good
                self.forget(users)
                logger.exception("history: compacting %d users failed", len(users))
            finally:
                for _ in users:
                    self._queue.task_done()
            if self._closing:  # psycopg turns a cancelled query into an error: stop anyway
                return

    async def idle(self, *, tails: bool = True) -> None:
        """Wait until the users queued so far are compacted (or failed) and, with ``tails``,
        every counted user too (up to ``idle_s`` more). For tests and benchmarks: under
        steady appends the counted users are never all done.

        Raises:
            RuntimeError: a background task ended (a bug; it is logged).
        """
        while True:
            join = asyncio.ensure_future(self._queue.join())
            await asyncio.wait([join, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
            if not join.done():
                join.cancel()
                raise RuntimeError("the background compaction ended")
            if not tails or not self._counts:
                return
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Stop the background tasks (a compaction in flight is rolled back)."""
        self._closing = True
        pending = set(self._tasks)
        self._tasks = []
        # A cancellation that reaches a query in flight comes back from psycopg as a query
        # error, which `_run` survives by design: cancel again until every task has ended.
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
