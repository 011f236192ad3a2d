"""Rebuilding a user's hot keys from the durable tier (docs/DESIGN.md §4: key loss is safe).

The store answers ``repair`` for a user whose hot keys disagree (the position, the dedup
ring or the tail lost or malformed: deleted by hand, a partial restore, a foreign write).
Nothing of such a user is written until :func:`repair_user` ran:

1. whatever the tail still holds beyond ``durable`` is written to the durable tier (those
   events were stored but maybe never acknowledged: keeping them is safe, dedup included);
2. the ring is rebuilt from the durable tier's history (``DedupRing.replay``: the last W
   events, the watermark over the older ones), so no acknowledged event can be applied twice
   when it is re-sent;
3. ``Store.restore`` sets the position to the durable tier's last event, empties the tail
   and keeps the state only if it covers no more than that (else the applier rebuilds it),
   iff the position did not move meanwhile (a concurrent repair won: nothing to do).

Events in the tail that were never durable and are lost with a key were never acknowledged
(/ingest acknowledges only after the durable write), so the client retries them.
"""

from __future__ import annotations

import logging

from service.history.base import HistoryChunk, HistoryGap, HistoryStore
from service.metrics import Metrics
from service.store.base import Store
from service.store.dedup_ring import DedupRing
from service.store.eventlog import RECORD_SIZE, decode_log

__all__ = ["repair_user"]

logger = logging.getLogger(__name__)


async def repair_user(
    user_id: str, store: Store, history: HistoryStore, dedup_window: int, metrics: Metrics
) -> bool:
    """Rebuild the user's position, ring and tail from the durable tier; False when another
    writer moved the position first (then nothing was changed here).

    Raises:
        StoreError / HistoryUnavailable: a tier failed (503; the next call repairs again).
    """
    snapshot = await store.read_log(user_id, None, unapplied_only=False)
    undurable = snapshot.undurable if snapshot.exists else b""
    if len(undurable) == (snapshot.seq - snapshot.durable) * RECORD_SIZE and undurable:
        try:
            await history.append([HistoryChunk(user_id, snapshot.durable + 1, undurable)])
        except HistoryGap:
            pass  # the position is ahead of the history: keep what the history holds
    stored = await history.read(user_id)
    ring = DedupRing.replay(dedup_window, decode_log(stored.records), stored.last_seq)
    done = await store.restore(
        user_id,
        expected_seq=snapshot.seq if snapshot.exists else None,
        seq=stored.last_seq,
        ring=ring.to_bytes(),
    )
    metrics.hot_repairs.labels(outcome="restored" if done else "raced").inc()
    logger.warning(
        "user %s: hot keys rebuilt from %d durable events (%s)",
        user_id,
        stored.last_seq,
        "restored" if done else "another writer first",
    )
    return done
