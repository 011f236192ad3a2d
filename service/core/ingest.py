"""The /ingest use case: group events by user, drop duplicates, update factors, write atomically.

Per user, one optimistic transaction (DESIGN §3, §4): read the state, its version and the last
10,000 log records → drop duplicates → absorb the fresh records (``UserStates.extend``: a Brand
update off the event loop, or a rebuild of a stale state) → write the state and append the
records if the version did not move. A lost race re-runs the transaction (bounded, with
jittered backoff), then answers 503; inside one process a user's transactions queue on a lock
instead of racing. The users of one request run concurrently. The caller acknowledges only
after every user's write was confirmed; a retried request is harmless because ingest is
idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from service.core.items import ItemId
from service.core.userlocks import UserLocks
from service.core.users import UserStates
from service.errors import StoreBusy
from service.metrics import Metrics
from service.store.eventlog import DEDUP_WINDOW, decode_log, duplicate_mask, make_records

__all__ = ["EventColumns", "IngestResult", "Ingestor"]

logger = logging.getLogger(__name__)

# Users of one request in flight at once: enough to overlap store round trips, few enough
# not to drain the connection pool (64) or the default thread pool.
_USERS_IN_FLIGHT = 16
_BACKOFF_BASE_S = 0.001
_BACKOFF_MAX_S = 0.05


class EventColumns(NamedTuple):
    """n validated events as parallel columns, in arrival order."""

    user_ids: Sequence[str]
    ts: Sequence[float]
    items: Sequence[ItemId]
    actions: Sequence[str | None]
    event_ids: Sequence[str | None]

    def by_user(self) -> dict[str, np.ndarray]:
        """Each user's events as ``EVENT_DTYPE`` records in arrival order; users in order of
        first appearance."""
        records = make_records(self.ts, self.items, self.actions, self.event_ids)  # (n,)
        positions: dict[str, list[int]] = {}
        for i, user_id in enumerate(self.user_ids):
            positions.setdefault(user_id, []).append(i)
        return {user_id: records[idx] for user_id, idx in positions.items()}


class IngestResult(NamedTuple):
    accepted: int
    duplicates: int
    users: int


class _Outcome(NamedTuple):
    accepted: int
    duplicates: int


@dataclass
class Ingestor:
    """Applies validated events to the store.

    ``locks`` is shared by every request of one process (one writer per user in it);
    ``cas_retries`` bounds the lost races per user, ``log_cap`` the events kept per log.
    """

    users: UserStates
    metrics: Metrics
    locks: UserLocks
    cas_retries: int
    log_cap: int

    async def ingest(self, events: EventColumns) -> IngestResult:
        """Absorb ``events``; returns counts once every write is confirmed.

        Raises:
            StoreUnavailable / StoreError: the store failed (503).
            StoreBusy: too many lost write races for one user (503).
        """
        groups = events.by_user()
        # Users are independent: their transactions overlap (store round trips, factor updates
        # in worker threads). All must succeed before the request is acknowledged.
        in_flight = asyncio.Semaphore(_USERS_IN_FLIGHT)

        async def one(user_id: str, records: np.ndarray) -> _Outcome:
            async with in_flight, self.locks.hold(user_id):
                return await self._ingest_user(user_id, records)

        outcomes = await asyncio.gather(*(one(u, recs) for u, recs in groups.items()))
        accepted = sum(outcome.accepted for outcome in outcomes)
        duplicates = sum(outcome.duplicates for outcome in outcomes)
        self.metrics.ingest_events.labels(result="accepted").inc(accepted)
        self.metrics.ingest_events.labels(result="duplicate").inc(duplicates)
        return IngestResult(accepted=accepted, duplicates=duplicates, users=len(groups))

    async def _ingest_user(self, user_id: str, records: np.ndarray) -> _Outcome:
        attempts = self.cas_retries + 1
        for attempt in range(attempts):
            outcome = await self._attempt(user_id, records)
            if outcome is not None:
                return outcome
            delay_s = min(_BACKOFF_BASE_S * 2**attempt, _BACKOFF_MAX_S)
            await asyncio.sleep(random.uniform(0.0, delay_s))  # jitter spreads the racers
        raise StoreBusy(attempts)

    async def _attempt(self, user_id: str, records: np.ndarray) -> _Outcome | None:
        """One optimistic transaction; None when another writer got there first."""
        record = await self.users.store.read(user_id, with_log=True, log_tail=DEDUP_WINDOW)
        duplicate = duplicate_mask(decode_log(record.log), records)
        fresh = records[~duplicate]
        outcome = _Outcome(accepted=int(fresh.shape[0]), duplicates=int(duplicate.sum()))
        if fresh.shape[0] == 0:
            return outcome
        written = await self.users.extend(user_id, record, fresh, self.log_cap)
        return outcome if written else None
