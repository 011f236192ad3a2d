"""A user's event history across the two tiers: the durable tier's events plus the Redis
tail's events not yet durable (docs/DESIGN.md §4).

What the applier and the rank path read, and the one step that moves tail records into the
durable tier outside /ingest (the sweeper's case: a serve died between its Redis step and its
durable write). A tail that does not hold what its position says (lost, malformed) raises
``LogFormatError``; the callers repair the user from the durable tier.
"""

from __future__ import annotations

import numpy as np

from service.history.base import HistoryChunk, HistoryStore
from service.store.base import LogSlice, Store
from service.store.eventlog import RECORD_SIZE, LogFormatError, decode_log

__all__ = ["history_records", "persist_undurable", "unapplied_records"]


async def persist_undurable(
    store: Store, history: HistoryStore, user_id: str, snapshot: LogSlice
) -> None:
    """Write the tail's records ``(durable, seq]`` to the durable tier and mark them durable.

    Raises:
        LogFormatError: the tail does not hold them all.
    """
    undurable = snapshot.undurable
    if len(undurable) != (snapshot.seq - snapshot.durable) * RECORD_SIZE:
        raise LogFormatError(len(undurable))
    await history.append([HistoryChunk(user_id, snapshot.durable + 1, undurable)])
    await store.mark_durable([(user_id, snapshot.seq)])


async def unapplied_records(history: HistoryStore, user_id: str, snapshot: LogSlice) -> np.ndarray:
    """The records ``(applied, seq]`` (``EVENT_DTYPE``, oldest first): from the tail, or from
    the durable tier when the tail no longer holds them all (after a repair).

    Raises:
        LogFormatError: neither holds them all.
    """
    if not snapshot.truncated:
        return decode_log(snapshot.records)
    stored = await history.read(user_id, after_seq=snapshot.applied)
    want = (snapshot.seq - snapshot.applied) * RECORD_SIZE
    if len(stored.records) < want:
        raise LogFormatError(len(stored.records))
    return decode_log(stored.records[:want])


async def history_records(
    history: HistoryStore, user_id: str, snapshot: LogSlice, log_cap: int | None
) -> np.ndarray:
    """The user's events up to ``snapshot.seq``, oldest first: the durable tier's up to
    ``durable``, then the tail's undurable ones; the newest ``log_cap`` if the operator set
    a cap, else all of them (never truncated otherwise)."""
    after = 0 if log_cap is None else max(0, snapshot.durable - log_cap)
    stored = await history.read(user_id, after_seq=after)
    durable = stored.records[: (snapshot.durable - after) * RECORD_SIZE]
    records = decode_log(durable + snapshot.undurable)
    return records if log_cap is None else records[-log_cap:]
