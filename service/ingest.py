"""POST /ingest logic: group events by user, drop duplicates, update factors, write atomically.

Per user, one optimistic transaction (DESIGN §3, §4): read the state, its version and the last
10,000 log records → drop duplicates → Brand-update the factors off the event loop → write
the state and append the new records if the version did not move. A lost race re-runs the
transaction (bounded, with jittered backoff), then answers 503; inside one process a user's
transactions queue on a lock instead of racing. The users of one request run concurrently.
A state written under another model or configuration, unreadable, or whose residual ratio
passes the threshold is rebuilt from the whole log and written with ``replace``. The caller
acknowledges only after every user's write was confirmed; a retried request is harmless
because ingest is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from model.lowrank import LowRankState
from service.errors import StoreBusy
from service.eventlog import DEDUP_WINDOW, RECORD_SIZE, decode_log, duplicate_mask, make_records
from service.factors import append_rows, parse_state
from service.metrics import Metrics
from service.rebuild import rebuild_and_replace
from service.runtime import ServingModel
from service.schemas import Event
from service.settings import Settings
from service.store import Store
from service.userlocks import UserLocks

__all__ = ["IngestResult", "Ingestor", "group_by_user"]

logger = logging.getLogger(__name__)

# Users of one request in flight at once: enough to overlap store round trips, few enough
# not to drain the connection pool (64) or the default thread pool.
_USERS_IN_FLIGHT = 16
_BACKOFF_BASE_S = 0.001
_BACKOFF_MAX_S = 0.05


class IngestResult(NamedTuple):
    accepted: int
    duplicates: int
    users: int


class _Outcome(NamedTuple):
    accepted: int
    duplicates: int


def group_by_user(events: Sequence[Event]) -> dict[str, list[Event]]:
    """Events per user id, each list in arrival order; users in order of first appearance."""
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(event.user_id, []).append(event)
    return groups


def _records(events: Sequence[Event]) -> np.ndarray:
    return make_records(
        [e.ts for e in events],
        [e.item_id for e in events],
        [e.action for e in events],
        [e.event_id for e in events],
    )


@dataclass
class Ingestor:
    """Applies validated events to the store; shared by all requests of one app."""

    store: Store
    model: ServingModel
    settings: Settings
    metrics: Metrics
    _user_locks: UserLocks = field(default_factory=UserLocks, init=False, repr=False)

    async def ingest(self, events: Sequence[Event]) -> IngestResult:
        """Absorb ``events``; returns counts once every write is confirmed.

        Raises:
            StoreUnavailable / StoreError: the store failed (503).
            StoreBusy: too many lost write races for one user (503).
        """
        groups = group_by_user(events)
        # Users are independent: their transactions overlap (store round trips, factor updates
        # in worker threads). All must succeed before the request is acknowledged.
        in_flight = asyncio.Semaphore(_USERS_IN_FLIGHT)

        async def one(user_id: str, user_events: list[Event]) -> _Outcome:
            async with in_flight:
                return await self._ingest_locked(user_id, _records(user_events))

        outcomes = await asyncio.gather(*(one(u, evs) for u, evs in groups.items()))
        accepted = sum(outcome.accepted for outcome in outcomes)
        duplicates = sum(outcome.duplicates for outcome in outcomes)
        self.metrics.ingest_events.labels(result="accepted").inc(accepted)
        self.metrics.ingest_events.labels(result="duplicate").inc(duplicates)
        return IngestResult(accepted=accepted, duplicates=duplicates, users=len(groups))

    async def _ingest_locked(self, user_id: str, records: np.ndarray) -> _Outcome:
        async with self._user_locks.hold(user_id):
            return await self._ingest_user(user_id, records)

    async def _ingest_user(self, user_id: str, records: np.ndarray) -> _Outcome:
        attempts = self.settings.cas_retries + 1
        for attempt in range(attempts):
            outcome = await self._attempt(user_id, records)
            if outcome is not None:
                return outcome
            delay_s = min(_BACKOFF_BASE_S * 2**attempt, _BACKOFF_MAX_S)
            await asyncio.sleep(random.uniform(0.0, delay_s))  # jitter spreads the racers
        raise StoreBusy(attempts)

    async def _attempt(self, user_id: str, records: np.ndarray) -> _Outcome | None:
        """One optimistic transaction; None when another writer got there first."""
        record = await self.store.read(user_id, with_log=True, log_tail=DEDUP_WINDOW)
        duplicate = duplicate_mask(decode_log(record.log), records)
        fresh = records[~duplicate]
        outcome = _Outcome(accepted=int(fresh.shape[0]), duplicates=int(duplicate.sum()))
        if fresh.shape[0] == 0:
            return outcome
        parsed = parse_state(record.state, self.model, log_present=len(record.log) > 0)
        reason = parsed.rebuild
        if reason is None:
            state = await asyncio.to_thread(self._update, parsed.state, fresh)
            if state.residual_ratio <= self.settings.rebuild_residual_ratio:
                written = await self.store.write_if_unchanged(
                    user_id, record.version, state.to_bytes(), fresh.tobytes(),
                    self.settings.log_cap,
                )  # fmt: skip
                return outcome if written else None
            reason = "residual"
        written = await self._rebuild(user_id, record.version, fresh, reason)
        return outcome if written else None

    def _update(self, state: LowRankState | None, fresh: np.ndarray) -> LowRankState:
        """Embed the new records and Brand-update the factors (runs in a worker thread)."""
        start = time.perf_counter()
        items, actions = self.model.log_rows(fresh)
        rows = self.model.embed(items, actions)  # (b, d)
        updated = append_rows(state, rows, np.asarray(fresh["ts"], dtype=np.float64), self.model)
        self.metrics.factor_update_seconds.observe(time.perf_counter() - start)
        self.metrics.factor_residual_ratio.observe(updated.residual_ratio)
        return updated

    async def _rebuild(self, user_id: str, version: int, fresh: np.ndarray, reason: str) -> bool:
        """Rebuild the user's factors from the whole (capped) log plus ``fresh``; replace."""
        full = await self.store.read(user_id, with_log=True)
        if full.version != version:
            return False
        log = (full.log + fresh.tobytes())[-self.settings.log_cap * RECORD_SIZE :]
        _, written = await rebuild_and_replace(
            self.store, self.model, self.metrics, user_id, version, log, reason
        )
        return written
