"""The /ingest use case: group events by user and, per user, one atomic store step; the whole
history written to the durable tier before the acknowledgement; no factor update in the
request (docs/DESIGN.md §3).

One request, in round trips:

1. ``IngestStream.mark``: the users are marked dirty on their partitions (the sweeper's net:
   a serve killed after step 2 leaves them marked, and the sweeper applies them);
2. ``Store.append_batch``: per user, dedup against its ring (``service.store.dedup_ring``),
   the fresh records appended to the Redis tail, and back the records not yet durable
   (this request's, and any an earlier request stored but died before writing durably);
   refused unless it runs within ``sweep_grace_s`` of the mark (so the sweeper, which waits
   that long, never misses what it stored). A user whose hot keys are inconsistent is
   repaired from the durable tier (``service.core.repair``) and appended again;
3. ``HistoryStore.append``: those records, all users in one batched write (idempotent by
   seq, so a retry after a crash anywhere is safe);
4. ``Store.mark_durable`` and ``IngestStream.post_batch`` (concurrently): the tails may drop
   what is durable and applied, and the appliers are told.

The request is acknowledged with exact counts once all of it is confirmed: nothing
acknowledged lives only in Redis. A notice is posted whenever the user has unapplied events,
duplicates-only calls included, so a client retrying after a failure between the steps
leaves nothing unannounced.

``wait=True`` (``POST /ingest?wait=true``) returns only once every user's state under this
process's model version covers the position of this request (read-your-writes), polling the
positions up to ``wait_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from service.core.items import ItemId
from service.core.repair import repair_user
from service.errors import ApplyTimeout, UserRepairing
from service.history.base import HistoryChunk, HistoryGap, HistoryStore
from service.metrics import Metrics
from service.store.base import AppendRequest, AppendResult, Store
from service.store.dedup_ring import DIGEST_SIZE, digests
from service.store.eventlog import RECORD_SIZE, identity_keys, make_records
from service.stream.base import IngestStream, dirty_members

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

    def by_user(self) -> list[AppendRequest]:
        """One append request per user: its ``EVENT_DTYPE`` records in arrival order and
        their dedup digests; users in order of first appearance. Records and digests are
        computed for the whole request in one numpy pass (per user, the dozen numpy calls
        cost more than the events of a 5-event user)."""
        records = make_records(self.ts, self.items, self.actions, self.event_ids)  # (n,)
        digs = np.frombuffer(digests(identity_keys(records)), dtype="<u8")  # (n,)
        codes: dict[str, int] = {}  # user → its rank of first appearance
        user_codes = np.fromiter(
            (codes.setdefault(u, len(codes)) for u in self.user_ids), np.int64, len(records)
        )  # (n,)
        order = np.argsort(user_codes, kind="stable")  # (n,) users' events together, in order
        counts = np.bincount(user_codes, minlength=len(codes))  # (users,)
        ends = np.cumsum(counts)  # (users,)
        starts = (ends - counts).tolist()
        grouped, grouped_digs = records[order].tobytes(), digs[order].tobytes()
        return [
            AppendRequest(
                user_id,
                grouped[start * RECORD_SIZE : end * RECORD_SIZE],
                grouped_digs[start * DIGEST_SIZE : end * DIGEST_SIZE],
            )
            for user_id, start, end in zip(codes, starts, ends.tolist(), strict=True)
        ]


class IngestResult(NamedTuple):
    accepted: int
    duplicates: int
    users: int
    refused: int = 0  # older than the dedup ring remembers: not stored (never applied twice)


@dataclass
class Ingestor:
    """Appends validated events to the store and the durable tier, and announces them."""

    store: Store
    stream: IngestStream
    metrics: Metrics
    history: HistoryStore
    dedup_window: int
    model_version: str  # read-your-writes is for this version's states
    wait_s: float = 5.0
    grace_s: float = 5.0  # the store step runs within this of the users' dirty mark

    async def ingest(self, events: EventColumns, *, wait: bool = False) -> IngestResult:
        """Store ``events``; returns exact counts once every user's step is confirmed.

        Raises:
            StoreUnavailable / StoreError / HistoryUnavailable: a tier failed (503; retrying
                is safe: what was stored is deduplicated and made durable by the retry).
            ApplyTimeout: ``wait`` and the events were not applied within ``wait_s`` (503).
        """
        requests = events.by_user()
        users = [r.user_id for r in requests]
        marked_s = time.time()
        token = uuid.uuid4().hex[:16]  # this call's member of each user's dirty mark
        await self.stream.mark(users, marked_s, token)
        results = await self._append(requests, marked_s + self.grace_s)
        chunks = [
            HistoryChunk(u, r.durable + 1, r.undurable)
            for u, r in zip(users, results, strict=True)
            if r.undurable
        ]
        await self._write_durably(chunks)
        # Announce every user with unapplied events, duplicates-only ones included: a retry
        # after a failure between the steps then leaves nothing unannounced.
        unapplied = [(u, r.seq) for u, r in zip(users, results, strict=True) if r.seq > r.applied]
        # A user left nothing unapplied is not announced: its member of this call's mark goes
        # now (the store step is done), or every replayed call would leave one to sweep.
        settled = [u for u, r in zip(users, results, strict=True) if r.seq <= r.applied]
        await asyncio.gather(
            self.store.mark_durable([(c.user_id, c.last_seq) for c in chunks]),
            self.stream.post_batch(unapplied, time.time(), token),
            self.stream.ack({}, unmark=dirty_members(settled, token, self.stream.partitions)),
        )
        accepted = sum(r.accepted for r in results)
        duplicates = sum(r.duplicates for r in results)
        refused = sum(r.refused for r in results)
        self.metrics.ingest_events.labels(result="accepted").inc(accepted)
        self.metrics.ingest_events.labels(result="duplicate").inc(duplicates)
        self.metrics.ingest_events.labels(result="refused").inc(refused)
        if wait:
            await self._wait_applied({u: r.seq for u, r in zip(users, results, strict=True)})
        return IngestResult(accepted, duplicates, len(users), refused)

    async def _append(
        self, requests: list[AppendRequest], not_after_s: float
    ) -> list[AppendResult]:
        """``Store.append_batch``, then once more for the users it could not take: users
        unknown to Redis are created if the durable tier does not know them either (else
        all their hot keys were lost), and users with lost hot keys are first repaired from
        the durable tier. A second refusal is a 503."""
        results = await self.store.append_batch(
            requests, dedup_window=self.dedup_window, not_after_s=not_after_s
        )
        retry = [i for i, r in enumerate(results) if r.repair or r.unknown]
        if not retry:
            return results
        unknown = [i for i in retry if results[i].unknown]
        stored = await asyncio.gather(
            *(self.history.last_seq(requests[i].user_id) for i in unknown)
        )
        lost = {i for i, last in zip(unknown, stored, strict=True) if last > 0}
        for i in retry:
            if results[i].repair or i in lost:
                await repair_user(
                    requests[i].user_id, self.store, self.history, self.dedup_window, self.metrics
                )
        again = await self.store.append_batch(
            [requests[i] for i in retry],
            dedup_window=self.dedup_window,
            not_after_s=not_after_s,
            create=True,
        )
        for i, result in zip(retry, again, strict=True):
            if result.repair:
                raise UserRepairing(requests[i].user_id)
            results[i] = result
        return results

    async def _write_durably(self, chunks: list[HistoryChunk]) -> None:
        """One batched durable write; a user whose position ran ahead of the durable tier
        (a gap: its tail was lost) is repaired, and the request answered 503."""
        if not chunks:
            return
        try:
            await self.history.append(chunks)
        except HistoryGap as gap:
            await repair_user(
                gap.user_id, self.store, self.history, self.dedup_window, self.metrics
            )
            raise UserRepairing(gap.user_id) from gap

    async def _wait_applied(self, targets: dict[str, int]) -> None:
        deadline = time.monotonic() + self.wait_s
        pause_s = _WAIT_POLL_S[0]
        waiting = dict(targets)
        while waiting:
            positions = await asyncio.gather(
                *(self.store.position(u, self.model_version) for u in waiting)
            )
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
