"""Rebuild a user's factors from the event log and write them back (shared by ingest and rank).

Used when a stored state cannot be extended: written under another model or configuration,
unreadable, missing while the log exists, or past the residual threshold.
"""

from __future__ import annotations

import asyncio
import logging
import time

from model.lowrank import LowRankState
from service.eventlog import RECORD_SIZE, decode_log
from service.factors import rebuild_from_log
from service.metrics import Metrics
from service.runtime import ServingModel
from service.store import Store

__all__ = ["rebuild_and_replace"]

logger = logging.getLogger(__name__)


async def rebuild_and_replace(
    store: Store,
    model: ServingModel,
    metrics: Metrics,
    user_id: str,
    version: int,
    log: bytes,
    reason: str,
) -> tuple[LowRankState, bool]:
    """Batch factors of ``log`` (computed off the event loop), written with ``log`` as the
    user's whole log unless the version moved. Returns (state, whether it was written)."""

    def rebuild() -> LowRankState:
        start = time.perf_counter()
        state = rebuild_from_log(decode_log(log), model)
        metrics.factor_update_seconds.observe(time.perf_counter() - start)
        metrics.factor_residual_ratio.observe(state.residual_ratio)
        return state

    state = await asyncio.to_thread(rebuild)
    written = await store.replace(user_id, version, state.to_bytes(), log)
    if written:
        metrics.state_rebuilds.labels(reason=reason).inc()
        logger.info("user state rebuilt from %d events (%s)", len(log) // RECORD_SIZE, reason)
    return state, written
