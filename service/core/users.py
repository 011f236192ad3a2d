"""A user's state: the one place that loads it, checks it against the model, applies the
pending events to it, rebuilds it from the event history when it is stale, and writes it back.

The history is read from the durable tier (``service.history``: the whole history, capped
only if the operator set ``SOLAR_LOG_CAP``), plus the Redis tail's records not yet durable;
before it applies anything, the applier writes the tail's undurable records to the durable
tier (the sweeper's case: a serve died between its store and durable steps), so a state never
covers an event the durable tier lacks. A malformed tail or a lost hot key makes the user
repaired from the durable tier (``service.core.repair``), never an applier crash.

The state is of the kind the model serves (``ServingModel.states``: the svd factors, or the
elastic, linear or mean state of ``model.states``); nothing here depends on which. A stored
state is usable when it decodes and carries the serving model's tag, kind and shape. The
applier folds a user's unapplied log records into it as ONE block update (Brand's for the
factors). It is rebuilt from the log (the batch state, off the event loop) when it was
written under another model (``model_version``) or configuration (``config``: also another
kind or shape), is unreadable (``corrupt``), is missing while the log holds applied events
(``missing``: the state key alone was lost), has drifted past the residual threshold
(``residual``), or when unapplied events were trimmed from the log before being applied
(``truncated``). Every write is ``Store.commit_state``: fenced on
the position read, so a concurrent writer wins and a deleted user stays deleted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from model.lowrank import LowRankState
from model.recent import RecentEvents
from model.state_blob import StateFormatError
from model.states import UserState, decode_user_state
from service.core.repair import repair_user
from service.core.serving_model import ServingModel, StateTag
from service.core.user_view import (
    UserView,
    served_singular_values,
    view_of,
)
from service.errors import StateUnreadable, StoreBusy, UnknownUser, UserRepairing
from service.history.base import HistoryChunk, HistoryStore
from service.metrics import Metrics
from service.store.base import LogSlice, Store
from service.store.eventlog import RECORD_SIZE, LogFormatError, decode_log

__all__ = [
    "Applied",
    "LoadedUser",
    "ParsedState",
    "UserStates",
    "UserView",
    "append_rows",
    "batch_state",
    "empty_state",
    "parse_state",
    "served_singular_values",
    "with_recent",
]

logger = logging.getLogger(__name__)


class ParsedState(NamedTuple):
    """A stored state and, when it cannot be used as is, why it must be rebuilt.

    ``rebuild`` is None (usable), ``"model_version"``, ``"config"``, ``"corrupt"`` (``state``
    None) or ``"missing"`` (no blob but an event log); see the module docstring.
    """

    state: UserState | None
    rebuild: str | None


def parse_state(
    blob: bytes | None, model: ServingModel, *, applied_in_log: bool = False
) -> ParsedState:
    """Decode a state blob (None: no state) and check it against the model.

    ``applied_in_log``: the log holds events the state should cover. Without a blob, that
    means the history must be rebuilt from the log, never restarted from nothing (which would
    lose it silently).
    """
    if blob is None:
        return ParsedState(None, "missing" if applied_in_log else None)
    try:
        state = decode_user_state(blob)
    except StateFormatError:
        return ParsedState(None, "corrupt")
    expected = model.state_tag
    if state.tag != str(expected):
        written_by = StateTag.parse(state.tag).model_version
        return ParsedState(
            state, "model_version" if written_by != expected.model_version else "config"
        )
    if not model.states.fits(state):  # another kind, rank, shape or window of latest events
        return ParsedState(state, "config")
    return ParsedState(state, None)


def empty_state(model: ServingModel) -> UserState:
    """The state of a user with no history, tagged for ``model``."""
    return model.states.empty()


def with_recent(
    state: UserState, items: np.ndarray, actions: np.ndarray, ts: np.ndarray, model: ServingModel
) -> UserState:
    """``state`` with the events (item/action rows, times (b,)) merged into its window of
    latest events, for a hybrid svd model (``recent_tokens`` > 0); ``state`` otherwise."""
    k = model.recent_tokens
    if not k or not isinstance(state, LowRankState):
        return state
    window = state.recent if state.recent is not None else RecentEvents.empty(k)
    return replace(state, recent=window.merged(items, actions, ts))


def batch_state(rows: np.ndarray, ts: np.ndarray, model: ServingModel) -> UserState:
    """The batch state of rows (N, d) at times ts (N,), with the model's kind, rank,
    oversampling, decay and tag (for svd ``LowRankState.from_rows``, O(N·d²))."""
    return model.states.from_rows(rows, ts)


def append_rows(
    state: UserState | None, rows: np.ndarray, ts: np.ndarray, model: ServingModel
) -> UserState:
    """One block update of ``state`` (None: a new user) with rows (b, d) at times ts."""
    base = state if state is not None else empty_state(model)
    return model.states.append(base, rows, ts)


class LoadedUser(NamedTuple):
    """A user's usable state (None: no history applied) and, when asked for, its decoded log."""

    state: UserState | None
    log: np.ndarray  # structured EVENT_DTYPE records, oldest first; empty unless requested


class Applied(NamedTuple):
    """What one ``UserStates.apply_pending`` call did."""

    events: int  # events folded into the state (0: nothing was pending)
    rebuilt: str | None  # why the state was rebuilt from the log instead, if it was


def _parse(snapshot: LogSlice, model: ServingModel) -> ParsedState:
    # The durable history holds applied events whenever the position says some were applied.
    return parse_state(snapshot.state, model, applied_in_log=snapshot.applied > 0)


@dataclass
class UserStates:
    """Loads, updates, rebuilds and writes back user states in one store for one model."""

    store: Store
    model: ServingModel
    metrics: Metrics
    rebuild_residual_ratio: float = 0.5  # rebuild when ρ/(Σσ²+ρ) passes this after an update
    commit_attempts: int = 8  # fenced writes lost to another writer before giving up
    history: HistoryStore = field(kw_only=True)
    dedup_window: int = field(kw_only=True)
    log_cap: int | None = field(default=None, kw_only=True)  # the operator's cap on reads

    # ------------------------------------------------------------------ compute
    def from_log(self, records: np.ndarray) -> UserState:
        """Batch factors of decoded log records (oldest first), with the model's settings."""
        if records.shape[0] == 0:
            return empty_state(self.model)
        items, actions = self.model.log_rows(records)
        rows = self.model.embed(items, actions)  # (N, d)
        ts = np.asarray(records["ts"], dtype=np.float64)
        return with_recent(batch_state(rows, ts, self.model), items, actions, ts, self.model)

    def _updated(self, state: UserState | None, records: np.ndarray) -> UserState:
        """One block update of ``state`` (None: a new user) with the new records."""
        items, actions = self.model.log_rows(records)
        rows = self.model.embed(items, actions)  # (b, d)
        ts = np.asarray(records["ts"], dtype=np.float64)
        updated = append_rows(state, rows, ts, self.model)
        return with_recent(updated, items, actions, ts, self.model)

    def _timed(self, compute: Callable[[], UserState]) -> UserState:
        start = time.perf_counter()
        state = compute()
        self.metrics.factor_update_seconds.observe(time.perf_counter() - start)
        self.metrics.factor_residual_ratio.observe(state.residual_ratio)
        return state

    # ------------------------------------------------------------------ the applier's step
    async def apply_pending(self, user_id: str) -> Applied:
        """Fold every unapplied event of the user into its state as one block update (or a
        rebuild when the state is stale) and commit it, fenced on the position read.

        Records the tail holds beyond ``durable`` are first written to the durable tier. A
        malformed tail or lost hot key is repaired from the durable tier. Re-running it
        applies nothing twice: the state covers a prefix of the history.

        Raises:
            StoreBusy: ``commit_attempts`` fenced writes lost in a row.
            StoreUnavailable / HistoryUnavailable: a tier failed.
        """
        for _ in range(self.commit_attempts):
            snapshot = await self.store.read_log(user_id, unapplied_only=True)
            if snapshot.seq > snapshot.durable:
                await self._persist(user_id, snapshot)
                continue
            parsed = _parse(snapshot, self.model)
            reason = parsed.rebuild
            if reason is None and snapshot.seq == snapshot.applied:
                return Applied(0, None)
            if reason is None:
                try:
                    records = await self._unapplied(user_id, snapshot)
                except LogFormatError:
                    await repair_user(user_id, self.store, self.history, self.dedup_window,
                                      self.metrics)  # fmt: skip
                    continue
                update = functools.partial(self._updated, parsed.state, records)
                state = await asyncio.to_thread(self._timed, update)
                if state.residual_ratio > self.rebuild_residual_ratio:
                    reason = "residual"
                elif await self._commit(user_id, snapshot, state):
                    return Applied(int(records.shape[0]), None)
                else:
                    continue
            if (await self._rebuild(user_id, reason, snapshot))[1]:
                return Applied(snapshot.seq - snapshot.applied, reason)
        raise StoreBusy(self.commit_attempts)

    async def _persist(self, user_id: str, snapshot: LogSlice) -> None:
        """Write the tail's records beyond ``durable`` to the durable tier and mark them; a
        tail that does not hold them (lost, malformed) makes the user repaired instead."""
        undurable = snapshot.undurable
        if len(undurable) != (snapshot.seq - snapshot.durable) * RECORD_SIZE:
            await repair_user(user_id, self.store, self.history, self.dedup_window, self.metrics)
            return
        await self.history.append([HistoryChunk(user_id, snapshot.durable + 1, undurable)])
        await self.store.mark_durable([(user_id, snapshot.seq)])

    async def _unapplied(self, user_id: str, snapshot: LogSlice) -> np.ndarray:
        """The records ``(applied, seq]``: from the tail, or from the durable tier when the
        tail no longer holds them all (after a repair)."""
        if not snapshot.truncated:
            return decode_log(snapshot.records)
        stored = await self.history.read(user_id, after_seq=snapshot.applied)
        want = (snapshot.seq - snapshot.applied) * RECORD_SIZE
        if len(stored.records) < want:
            raise LogFormatError(len(stored.records))  # the history lacks them: repair
        return decode_log(stored.records[:want])

    async def history_records(self, user_id: str, snapshot: LogSlice) -> np.ndarray:
        """The user's events up to ``snapshot.seq``, oldest first: the durable tier's up to
        ``durable``, then the tail's undurable ones; the newest ``log_cap`` if the operator
        set a cap, else all of them."""
        after = 0 if self.log_cap is None else max(0, snapshot.durable - self.log_cap)
        stored = await self.history.read(user_id, after_seq=after)
        durable = stored.records[: (snapshot.durable - after) * RECORD_SIZE]
        records = decode_log(durable + snapshot.undurable)
        return records if self.log_cap is None else records[-self.log_cap :]

    async def _commit(self, user_id: str, snapshot: LogSlice, state: UserState) -> bool:
        return await self.store.commit_state(
            user_id,
            state.to_bytes(),
            gen=snapshot.gen,
            expected_applied=snapshot.applied,
            applied=snapshot.seq,
        )

    async def _rebuild(
        self, user_id: str, reason: str, snapshot: LogSlice
    ) -> tuple[UserState, bool]:
        """Batch factors of the whole durable history, committed as covering ``durable``.
        Returns (state, whether the fence held and it was written)."""
        durable = snapshot._replace(seq=snapshot.durable, records=b"")
        records = await self.history_records(user_id, durable)
        state = await asyncio.to_thread(self._timed, functools.partial(self.from_log, records))
        if not await self._commit(user_id, durable, state):
            return state, False
        self.metrics.state_rebuilds.labels(reason=reason).inc()
        logger.info("user state rebuilt from %d events (%s)", records.shape[0], reason)
        return state, True

    # ------------------------------------------------------------------ the rank path
    async def load(self, user_id: str, *, with_log: bool = False) -> LoadedUser:
        """The user's usable state, rebuilding (and writing back) a stale one.

        Without ``with_log`` a known user costs one GET of the state; the position and the
        durable history are read only for a user without a usable state or to rebuild.

        Raises:
            UserRepairing: the tail is malformed (503; the applier repairs the user).
            StoreError / HistoryUnavailable: a tier failed (503).
        """
        if not with_log:
            parsed = parse_state(await self.store.get_state(user_id), self.model)
            if parsed.state is not None and parsed.rebuild is None:
                return LoadedUser(parsed.state, decode_log(b""))
        snapshot = await self.store.read_log(user_id, unapplied_only=False)
        parsed = _parse(snapshot, self.model)
        state = parsed.state
        if parsed.rebuild is not None:
            # Written back unless the applier (or a delete) moved the fence first; either way
            # this request is served from what it read.
            state, _ = await self._rebuild(user_id, parsed.rebuild, snapshot)
        if not with_log:
            return LoadedUser(state, decode_log(b""))
        try:
            return LoadedUser(state, await self.history_records(user_id, snapshot))
        except LogFormatError as exc:
            raise UserRepairing(user_id) from exc

    # ------------------------------------------------------------------ forgetting
    async def forget(self, user_id: str) -> bool:
        """Delete the user from every tier: the durable history first, then the hot keys at
        once (state, tail, ring; the position stays as a fence with a new generation).

        In that order a concurrent ingest or applier finds the history empty and its
        durable write refused (a gap), and after the hot delete no late commit lands (the
        fence moved). Returns False when nothing was stored in Redis.
        """
        await self.history.delete(user_id)
        return await self.store.delete(user_id)

    # ------------------------------------------------------------------ inspection
    async def view(self, user_id: str) -> UserView:
        """The stored state as it is (no rebuild) and the events still pending.

        Raises:
            UnknownUser: nothing is stored for the user (404).
            StateUnreadable: the blob does not decode (409; rebuilt on the next touch).
        """
        # Position first: a commit writes state and position at once, so a state read after a
        # position with nothing pending exists unless the user was deleted.
        position = await self.store.position(user_id)
        parsed = parse_state(await self.store.get_state(user_id), self.model)
        state = parsed.state
        if parsed.rebuild == "corrupt":
            raise StateUnreadable(user_id)
        if state is None:
            if position.pending == 0:
                raise UnknownUser(user_id)
            state = empty_state(self.model)  # events acknowledged, none applied yet
        return view_of(state, position.pending)
