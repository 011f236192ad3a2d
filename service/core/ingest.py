"""The /ingest use case: group events by user and, per user, one atomic store step; no factor
update in the request (DESIGN §3).

Per user: ``Store.append_events`` (for all users of the request in one round trip,
``append_batch``) drops the events already among the user's last 10,000, appends the fresh
records to the log and returns the user's new position; a notice then goes to the user's
partition of the ingest stream (one more round trip), where an applier folds the events into
the state. The request is acknowledged once every user's step and notice are confirmed, with exact
counts. A notice is posted whenever the user has unapplied events, duplicates only included,
so a client retrying after a failure between the two steps leaves nothing unannounced.

``wait=True`` (``POST /ingest?wait=true``) returns only once every user's state covers the
position of this request (read-your-writes), polling the positions up to ``wait_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from service.core.items import ItemId
from service.errors import ApplyTimeout
from service.metrics import Metrics
from service.store.base import AppendRequest, Store
from service.store.eventlog import DEDUP_WINDOW, identity_keys, make_records
from service.stream.base import IngestStream

__all__ = ["EventColumns", "IngestResult", "Ingestor"]

logger = logging.getLogger(__name__)

_WAIT_POLL_S = (0.001, 0.05)  # first and longest pause between position polls


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


@dataclass
class Ingestor:
    """Appends validated events to the store and announces them on the ingest stream."""

    store: Store
    stream: IngestStream
    metrics: Metrics
    log_cap: int
    wait_s: float = 5.0

    async def ingest(self, events: EventColumns, *, wait: bool = False) -> IngestResult:
        """Store ``events``; returns exact counts once every user's step is confirmed.

        Raises:
            StoreUnavailable / StoreError: the store failed (503; retrying is safe).
            ApplyTimeout: ``wait`` and the events were not applied within ``wait_s`` (503).
        """
        groups = events.by_user()
        results = await self.store.append_batch(
            [AppendRequest(u, recs.tobytes(), identity_keys(recs)) for u, recs in groups.items()],
            log_cap=self.log_cap,
            dedup_window=DEDUP_WINDOW,
        )
        # Announce every user with unapplied events, duplicates-only ones included: a retry
        # after a failure between the two steps then leaves nothing unannounced.
        unapplied = [(u, r.seq) for u, r in zip(groups, results, strict=True) if r.seq > r.applied]
        await self.stream.post_batch(unapplied, time.time())
        accepted = sum(r.accepted for r in results)
        duplicates = sum(r.duplicates for r in results)
        self.metrics.ingest_events.labels(result="accepted").inc(accepted)
        self.metrics.ingest_events.labels(result="duplicate").inc(duplicates)
        if wait:
            await self._wait_applied({u: r.seq for u, r in zip(groups, results, strict=True)})
        return IngestResult(accepted=accepted, duplicates=duplicates, users=len(groups))

    async def _wait_applied(self, targets: dict[str, int]) -> None:
        deadline = time.monotonic() + self.wait_s
        pause_s = _WAIT_POLL_S[0]
        waiting = dict(targets)
        while waiting:
            positions = await asyncio.gather(*(self.store.position(u) for u in waiting))
            waiting = {
                u: seq
                for (u, seq), pos in zip(waiting.items(), positions, strict=True)
                if pos.applied < seq
            }
            if not waiting:
                return
            if time.monotonic() + pause_s > deadline:
                raise ApplyTimeout(len(waiting), self.wait_s)
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, _WAIT_POLL_S[1])
