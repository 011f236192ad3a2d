"""A user's state: the one place that loads it, checks it against the model, rebuilds it from
the event log when it is stale, and writes it back.

A stored state is usable when it decodes and carries the serving model's tag and shape. It is
rebuilt from the log (batch factors, O(N·d²), off the event loop) when it was written under
another model (``model_version``) or configuration (``config``), is unreadable (``corrupt``),
is missing while a log exists (``missing``: the state key alone was lost) or has drifted past
the residual threshold (``residual``). A rebuilt state is written back with a compare-and-set,
so a concurrent writer wins and nothing is overwritten blindly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from model.lowrank import LowRankState
from model.state_blob import StateFormatError
from service.core.serving_model import ServingModel, StateTag
from service.errors import StateUnreadable, UnknownUser
from service.metrics import Metrics
from service.store.base import Store, UserRecord
from service.store.eventlog import RECORD_SIZE, decode_log

__all__ = [
    "LoadedUser",
    "ParsedState",
    "UserStates",
    "UserView",
    "append_rows",
    "batch_state",
    "empty_state",
    "parse_state",
    "served_singular_values",
]

logger = logging.getLogger(__name__)


class ParsedState(NamedTuple):
    """A stored state and, when it cannot be used as is, why it must be rebuilt.

    ``rebuild`` is None (usable), ``"model_version"``, ``"config"``, ``"corrupt"`` (``state``
    None) or ``"missing"`` (no blob but an event log); see the module docstring.
    """

    state: LowRankState | None
    rebuild: str | None


def parse_state(
    blob: bytes | None, model: ServingModel, *, log_present: bool = False
) -> ParsedState:
    """Decode a state blob (None: no state) and check it against the model.

    ``log_present``: the user has event-log records. Without a blob, that means the history
    must be rebuilt from the log, never restarted from nothing (which would lose it silently).
    """
    if blob is None:
        return ParsedState(None, "missing" if log_present else None)
    try:
        state = LowRankState.from_bytes(blob)
    except StateFormatError:
        return ParsedState(None, "corrupt")
    expected = model.state_tag
    if state.tag != str(expected):
        written_by = StateTag.parse(state.tag).model_version
        return ParsedState(
            state, "model_version" if written_by != expected.model_version else "config"
        )
    if (state.rank, state.ell, state.d) != (model.rank, model.ell, model.dim):
        return ParsedState(state, "config")
    return ParsedState(state, None)


def empty_state(model: ServingModel) -> LowRankState:
    """The state of a user with no history, tagged for ``model``."""
    return LowRankState.empty(model.dim, model.rank, model.oversample, str(model.state_tag))


def batch_state(rows: np.ndarray, ts: np.ndarray, model: ServingModel) -> LowRankState:
    """The batch factors of rows (N, d) at times ts (N,), with the model's rank, oversampling,
    decay and tag: ``LowRankState.from_rows``, O(N·d²)."""
    return LowRankState.from_rows(
        rows,
        model.rank,
        oversample=model.oversample,
        ts=ts,
        decay=model.decay,
        tag=str(model.state_tag),
    )


def append_rows(
    state: LowRankState | None, rows: np.ndarray, ts: np.ndarray, model: ServingModel
) -> LowRankState:
    """One Brand block update of ``state`` (None: a new user) with rows (b, d) at times ts."""
    base = state if state is not None else empty_state(model)
    return base.append(rows, ts=ts, decay=model.decay)


# σ_k ≤ this × σ_1 is rounding noise (~1e-16 for a history of rank < r), not an interest.
RELATIVE_SIGMA_FLOOR = 1e-6


def served_singular_values(sigma: np.ndarray, rank: int) -> list[float]:
    """The ``rank`` served singular values of a state's σ (ℓ, descending): values at or below
    ``RELATIVE_SIGMA_FLOOR``·σ_1 (a history shorter than r, or of lower rank) read 0.0."""
    served = np.asarray(sigma[:rank], dtype=np.float64)  # (r,)
    floor = RELATIVE_SIGMA_FLOOR * float(served[0]) if served.size else 0.0
    return [float(x) if x > floor else 0.0 for x in served]


class LoadedUser(NamedTuple):
    """A user's usable state (None: no history) and, when asked for, its decoded log."""

    state: LowRankState | None
    log: np.ndarray  # structured EVENT_DTYPE records, oldest first; empty unless requested


class UserView(NamedTuple):
    """What ``GET /users/{id}`` shows of a stored state (as stored, stale or not)."""

    history_length: int
    rank: int
    singular_values: list[float]  # the r served σ, descending; 0.0 past the history's rank
    residual_ratio: float
    last_ts: float | None
    model_version: str


@dataclass
class UserStates:
    """Loads, rebuilds and writes back user states in one store for one model."""

    store: Store
    model: ServingModel
    metrics: Metrics
    rebuild_residual_ratio: float = 0.5  # rebuild when ρ/(Σσ²+ρ) passes this after an update

    # ------------------------------------------------------------------ compute
    def from_log(self, records: np.ndarray) -> LowRankState:
        """Batch factors of decoded log records (oldest first), with the model's settings."""
        if records.shape[0] == 0:
            return empty_state(self.model)
        items, actions = self.model.log_rows(records)
        rows = self.model.embed(items, actions)  # (N, d)
        return batch_state(rows, np.asarray(records["ts"], dtype=np.float64), self.model)

    def appended(self, state: LowRankState | None, records: np.ndarray) -> LowRankState:
        """One Brand block update of ``state`` (None: a new user) with the new records."""
        start = time.perf_counter()
        items, actions = self.model.log_rows(records)
        rows = self.model.embed(items, actions)  # (b, d)
        ts = np.asarray(records["ts"], dtype=np.float64)
        updated = append_rows(state, rows, ts, self.model)
        self.metrics.factor_update_seconds.observe(time.perf_counter() - start)
        self.metrics.factor_residual_ratio.observe(updated.residual_ratio)
        return updated

    # ------------------------------------------------------------------ store round trips
    async def load(self, user_id: str, *, with_log: bool = False) -> LoadedUser:
        """The user's usable state, rebuilding (and writing back) a stale one.

        Without ``with_log`` a known user costs one GET of the state; the log is read only
        for a new user (to tell whether history exists) or a state to rebuild.
        """
        if not with_log:
            parsed = parse_state(await self.store.get_state(user_id), self.model)
            if parsed.state is not None and parsed.rebuild is None:
                return LoadedUser(parsed.state, decode_log(b""))
        record = await self.store.read(user_id, with_log=True)
        parsed = parse_state(record.state, self.model, log_present=len(record.log) > 0)
        state = parsed.state
        if parsed.rebuild is not None:
            state, _ = await self.rebuild(user_id, record.version, record.log, parsed.rebuild)
        return LoadedUser(state, decode_log(record.log if with_log else b""))

    async def extend(
        self, user_id: str, record: UserRecord, fresh: np.ndarray, log_cap: int
    ) -> bool:
        """Absorb the records ``fresh`` into the user read as ``record`` and append them to the
        log, in one compare-and-set; False when another writer moved the version first.

        ``record.log`` may be a tail of the log (ingest reads only the dedup window): a state
        to rebuild is rebuilt from the whole log, read again, plus ``fresh``.
        """
        parsed = parse_state(record.state, self.model, log_present=len(record.log) > 0)
        reason = parsed.rebuild
        if reason is None:
            state = await asyncio.to_thread(self.appended, parsed.state, fresh)
            if state.residual_ratio <= self.rebuild_residual_ratio:
                return await self.store.write_if_unchanged(
                    user_id, record.version, state.to_bytes(), fresh.tobytes(), log_cap
                )
            reason = "residual"
        full = await self.store.read(user_id, with_log=True)
        if full.version != record.version:
            return False
        log = (full.log + fresh.tobytes())[-log_cap * RECORD_SIZE :]
        _, written = await self.rebuild(user_id, record.version, log, reason)
        return written

    async def rebuild(
        self, user_id: str, version: int, log: bytes, reason: str
    ) -> tuple[LowRankState, bool]:
        """Batch factors of ``log`` (off the event loop), written with ``log`` as the user's
        whole log unless the version moved. Returns (state, whether it was written)."""

        def compute() -> LowRankState:
            start = time.perf_counter()
            state = self.from_log(decode_log(log))
            self.metrics.factor_update_seconds.observe(time.perf_counter() - start)
            self.metrics.factor_residual_ratio.observe(state.residual_ratio)
            return state

        state = await asyncio.to_thread(compute)
        written = await self.store.replace(user_id, version, state.to_bytes(), log)
        if written:
            self.metrics.state_rebuilds.labels(reason=reason).inc()
            logger.info("user state rebuilt from %d events (%s)", len(log) // RECORD_SIZE, reason)
        return state, written

    async def view(self, user_id: str) -> UserView:
        """The stored state as it is (no rebuild).

        Raises:
            UnknownUser: nothing is stored for the user (404).
            StateUnreadable: the blob does not decode (409; rebuilt on the next touch).
        """
        parsed = parse_state(await self.store.get_state(user_id), self.model)
        state = parsed.state
        if state is None:
            if parsed.rebuild == "corrupt":
                raise StateUnreadable(user_id)
            raise UnknownUser(user_id)
        return UserView(
            history_length=state.n,
            rank=state.rank,
            singular_values=served_singular_values(state.sigma, state.rank),
            residual_ratio=state.residual_ratio,
            last_ts=state.t_ref,
            model_version=StateTag.parse(state.tag).model_version,
        )
