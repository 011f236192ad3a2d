"""A user's state: the one place that loads it, checks it against the model, applies the
pending events to it, rebuilds it from the event history when it is stale, and writes it back.

The history is the durable tier's plus the Redis tail's undurable records
(``service.core.user_history``); the applier first makes the tail durable, so a state never
covers an event the durable tier lacks. A malformed tail or lost hot key makes the user
repaired from the durable tier (``service.core.repair``), never an applier crash.

The state is of the kind the model serves (``ServingModel.states``, a builder of the
``model.states`` family: the svd factors with the hybrid's window of latest events, or the
elastic, linear or mean state); nothing here depends on which: the builder takes the log's
events (item rows, action rows, times) and embeds them itself. A stored state is usable when
it decodes and carries the serving model's tag, kind and shape. The applier folds a user's
unapplied log records into it as ONE block update (Brand's for the factors). It is rebuilt
from the history (the batch state, off the event loop) when it was written under another
model (``model_version``) or configuration (``config``: also another kind or shape), is
unreadable (``corrupt``), is missing while events were applied (``missing``: the state key
alone was lost), or has drifted past the residual threshold (``residual``). States are kept
per model version (docs/DESIGN.md §3, "Rollouts"): a version's first state of a user is built
from the whole durable history (by the applier or ``solar backfill``, not counted as a
rebuild); a /rank that finds none while the user has durable events rebuilds it
(``new_version``), at most ``read_rebuilds`` at once per process and 503 beyond a queue of
``read_rebuild_queue``, so a rollout cannot turn into a rebuild storm. Every write is
``Store.commit_state``: fenced on the version's position read, so a concurrent writer wins,
another version's state is never touched and a deleted user stays deleted.
``UserStates.view`` describes a stored state as it is (no rebuild) for ``GET /users/{id}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from model.config import LIVE_TOKEN_RTOL
from model.states import StateFormatError, UserState, decode_user_state
from service.core.repair import repair_user
from service.core.serving_model import ServingModel, StateTag
from service.core.user_history import history_records, persist_undurable, unapplied_records
from service.errors import RebuildsBusy, StateUnreadable, StoreBusy, UnknownUser, UserRepairing
from service.history.base import HistoryStore
from service.metrics import Metrics
from service.settings import Settings
from service.store.base import LogSlice, StateCommit, Store
from service.store.eventlog import RECORD_SIZE, LogFormatError, decode_log

__all__ = [
    "Applied",
    "LoadedUser",
    "ParsedState",
    "RebuildGate",
    "UserStates",
    "UserView",
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


def _read_path_reason(snapshot: LogSlice, parsed: ParsedState) -> str | None:
    """Why /rank must rebuild the version's state: the parse's reason, or ``new_version``
    when the version has no state yet while the durable history holds the user's events."""
    if parsed.rebuild is None and parsed.state is None and snapshot.durable > 0:
        return "new_version"
    return parsed.rebuild


class RebuildGate:
    """The limit on /rank rebuilds of one process: ``concurrent`` at once, ``queue`` more
    waiting, any further one refused with ``RebuildsBusy`` (503 + Retry-After)."""

    def __init__(self, concurrent: int = 2, queue: int = 64) -> None:
        self._slots = asyncio.Semaphore(concurrent)
        self._limit = concurrent + queue
        self._inside = 0  # rebuilding or waiting

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one rebuild slot (waiting for it in the queue)."""
        if self._inside >= self._limit:
            raise RebuildsBusy(self._inside)
        self._inside += 1
        try:
            async with self._slots:
                yield
        finally:
            self._inside -= 1


def _durable_prefix(snapshot: LogSlice, through_seq: int | None) -> LogSlice:
    """``snapshot`` cut at its durable position when that covers ``through_seq`` and the tail
    holds every unapplied record; else ``snapshot`` itself."""
    if through_seq is None or not through_seq <= snapshot.durable < snapshot.seq:
        return snapshot
    if snapshot.truncated or snapshot.durable < snapshot.applied:
        return snapshot
    keep = (snapshot.durable - snapshot.applied) * RECORD_SIZE
    return snapshot._replace(seq=snapshot.durable, records=snapshot.records[:keep])


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
    rebuild_gate: RebuildGate = field(default_factory=RebuildGate, kw_only=True)
    # Blocks of at most this many events are applied on the event loop, not in a thread.
    inline_block_events: int = field(default=0, kw_only=True)

    @property
    def version(self) -> str:
        """The model version whose states these are."""
        return self.model.version

    @classmethod
    def create(
        cls,
        settings: Settings,
        store: Store,
        model: ServingModel,
        metrics: Metrics,
        *,
        history: HistoryStore,
        rebuild_gate: RebuildGate | None = None,
    ) -> UserStates:
        """The user states of a process (the API's and the applier's), configured by
        ``settings``, over the store and the durable history tier; ``rebuild_gate``: the
        process's limit on /rank rebuilds (one per process, shared by every request)."""
        gate = rebuild_gate or RebuildGate(settings.read_rebuilds, settings.read_rebuild_queue)
        return cls(
            store,
            model,
            metrics,
            settings.rebuild_residual_ratio,
            history=history,
            dedup_window=settings.dedup_window,
            log_cap=settings.log_cap,
            rebuild_gate=gate,
            inline_block_events=settings.apply_inline_events,
        )

    # ------------------------------------------------------------------ compute
    def from_log(self, records: np.ndarray) -> UserState:
        """The batch state of decoded log records (oldest first; none: the empty state), with
        the model's kind and settings (for svd ``LowRankState.from_rows``, O(N·d²))."""
        items, actions = self.model.log_rows(records)  # (N,) each
        ts = np.asarray(records["ts"], dtype=np.float64)
        return self.model.states.from_events(items, actions, ts)

    def _updated(self, state: UserState | None, records: np.ndarray) -> UserState:
        """One block update of ``state`` (None: a new user) with the new records (b ≥ 1)."""
        items, actions = self.model.log_rows(records)  # (b,) each
        ts = np.asarray(records["ts"], dtype=np.float64)
        base = state if state is not None else empty_state(self.model)
        return self.model.states.append(base, items, actions, ts)

    def _timed(self, compute: Callable[[], UserState]) -> UserState:
        start = time.perf_counter()
        state = compute()
        self.metrics.factor_update_seconds.observe(time.perf_counter() - start)
        self.metrics.factor_residual_ratio.observe(state.residual_ratio)
        return state

    # ------------------------------------------------------------------ the applier's step
    async def apply_pending(self, user_id: str, *, through_seq: int | None = None) -> Applied:
        """Fold every event of the user not yet in this version's state into it as one block
        update (the whole history in one batch for the version's first state; a rebuild when
        the state is stale) and commit it, fenced on the version's position read.

        The tail's undurable records are first made durable, unless ``through_seq`` (the
        latest event the caller's notices announce) is durable already: the undurable rest
        then belongs to an ingest still writing it durably, whose own notice follows, and only
        the durable prefix is applied. Re-running it applies nothing twice: the state covers a
        prefix of the history.

        Raises:
            StoreBusy: ``commit_attempts`` fenced writes lost in a row.
            StoreUnavailable / HistoryUnavailable: a tier failed.
        """
        for _ in range(self.commit_attempts):
            snapshot = _durable_prefix(
                await self.store.read_log(user_id, self.version, unapplied_only=True),
                through_seq,
            )
            parsed = _parse(snapshot, self.model)
            reason = parsed.rebuild
            if reason is None and snapshot.seq == snapshot.applied:
                return Applied(0, None)
            try:
                if snapshot.seq > snapshot.durable:
                    await persist_undurable(self.store, self.history, user_id, snapshot)
                    continue
                records = await unapplied_records(self.history, user_id, snapshot)
            except LogFormatError:  # the tail lacks what the position says: repair the user
                await repair_user(
                    user_id, self.store, self.history, self.dedup_window, self.metrics
                )
                continue
            if reason is None:
                state = await self._advanced(parsed.state, records)
                if state.residual_ratio > self.rebuild_residual_ratio:
                    reason = "residual"
                elif await self._commit(user_id, snapshot, state):
                    return Applied(int(records.shape[0]), None)
                else:
                    continue
            if (await self._rebuild(user_id, reason, snapshot, path="apply"))[1]:
                return Applied(snapshot.seq - snapshot.applied, reason)
        raise StoreBusy(self.commit_attempts)

    async def apply_pending_many(
        self, through: Sequence[tuple[str, int | None]]
    ) -> list[Applied | None]:
        """``apply_pending`` of every (user, through_seq) of an applier's batch, with the
        users' reads in one round trip and their commits in one pipeline (each still fenced
        on its own read); a user whose version has no state yet gets its first one here when
        the tail holds its whole history. A user this common path does not settle is None,
        for the caller to run ``apply_pending`` alone: one whose tail must first be made
        durable or read from the durable tier, whose state needs a rebuild or a repair, or
        whose fence was lost.

        Raises:
            StoreUnavailable: the batched read or commit failed (no user of it is settled).
        """
        snapshots = await self.store.read_logs(
            [(user_id, self.version) for user_id, _ in through], unapplied_only=True
        )
        outcomes: list[Applied | None] = [None] * len(through)
        commits: list[StateCommit] = []
        staged: list[tuple[int, int]] = []  # (index into through, events folded)
        for i, ((user_id, through_seq), read) in enumerate(zip(through, snapshots, strict=True)):
            snapshot = _durable_prefix(read, through_seq)
            try:
                parsed = _parse(snapshot, self.model)
                if parsed.rebuild is None and snapshot.seq == snapshot.applied:
                    outcomes[i] = Applied(0, None)
                    continue
                if parsed.rebuild is not None:
                    continue
                if snapshot.seq > snapshot.durable or snapshot.truncated:
                    continue
                # An untruncated tail holds every unapplied event: all of them when the
                # version has no state yet (applied = 0), whose first state is built here.
                records = decode_log(snapshot.records)
                state = await self._advanced(parsed.state, records)
            except Exception:  # apply_pending repeats it alone, where the applier isolates it
                continue
            if state.residual_ratio > self.rebuild_residual_ratio:
                continue
            commits.append(
                StateCommit(
                    user_id,
                    self.version,
                    state.to_bytes(),
                    snapshot.gen,
                    snapshot.applied,
                    snapshot.seq,
                )
            )
            staged.append((i, int(records.shape[0])))
        if commits:
            held = await self.store.commit_states(commits)
            for (i, events), ok in zip(staged, held, strict=True):
                if ok:
                    outcomes[i] = Applied(events, None)
        return outcomes

    async def _advanced(self, state: UserState | None, records: np.ndarray) -> UserState:
        """``state`` with ``records`` folded in as one block; the batch state of ``records``
        for the version's first state (None). Small blocks run on the event loop."""
        if state is None:
            compute = functools.partial(self.from_log, records)
        else:
            compute = functools.partial(self._updated, state, records)
        if records.shape[0] <= self.inline_block_events:
            return self._timed(compute)  # ~0.3 ms: cheaper than a thread hand-off
        return await asyncio.to_thread(self._timed, compute)

    async def _commit(self, user_id: str, snapshot: LogSlice, state: UserState) -> bool:
        return await self.store.commit_state(
            user_id,
            self.version,
            state.to_bytes(),
            gen=snapshot.gen,
            expected_applied=snapshot.applied,
            applied=snapshot.seq,
        )

    async def _rebuild(
        self, user_id: str, reason: str, snapshot: LogSlice, *, path: str
    ) -> tuple[UserState, bool]:
        """Batch factors of the whole durable history, committed as covering ``durable``.
        Returns (state, whether the fence held and it was written)."""
        durable = snapshot._replace(seq=snapshot.durable, records=b"")
        records = await history_records(self.history, user_id, durable, self.log_cap)
        state = await asyncio.to_thread(self._timed, functools.partial(self.from_log, records))
        if not await self._commit(user_id, durable, state):
            return state, False
        self.metrics.state_rebuilds.labels(reason=reason, version=self.version, path=path).inc()
        logger.info("user state rebuilt from %d events (%s)", records.shape[0], reason)
        return state, True

    async def _read_path_rebuild(self, user_id: str, reason: str, snapshot: LogSlice) -> UserState:
        """``_rebuild`` for /rank, at most ``read_rebuilds`` at once in this process.

        Raises:
            RebuildsBusy: ``read_rebuild_queue`` requests already wait for one (503).
        """
        async with self.rebuild_gate.turn():
            # Another request (or the applier) may have built it meanwhile: read again.
            fresh = await self.store.read_log(user_id, self.version, unapplied_only=False)
            parsed = _parse(fresh, self.model)
            if _read_path_reason(fresh, parsed) is None and parsed.state is not None:
                return parsed.state
            # Written back unless the applier (or a delete) moved the fence first; either way
            # this request is served from what it read.
            state, _ = await self._rebuild(user_id, reason, fresh, path="rank")
            return state

    # ------------------------------------------------------------------ the rank path
    async def load(self, user_id: str, *, with_log: bool = False) -> LoadedUser:
        """The user's usable state, rebuilding (and writing back) a stale or missing one.

        Without ``with_log`` a known user costs one GET of the state; the position and the
        durable history are read only for a user without a usable state or to rebuild. A
        malformed tail is ``UserRepairing`` (503: the applier repairs the user); too many
        rebuilds waiting is ``RebuildsBusy`` (503).
        """
        if not with_log:
            parsed = parse_state(await self.store.get_state(user_id, self.version), self.model)
            if parsed.state is not None and parsed.rebuild is None:
                return LoadedUser(parsed.state, decode_log(b""))
        snapshot = await self.store.read_log(user_id, self.version, unapplied_only=False)
        parsed = _parse(snapshot, self.model)
        state = parsed.state
        reason = _read_path_reason(snapshot, parsed)
        if reason is not None:
            state = await self._read_path_rebuild(user_id, reason, snapshot)
        if not with_log:
            return LoadedUser(state, decode_log(b""))
        try:
            log = await history_records(self.history, user_id, snapshot, self.log_cap)
            return LoadedUser(state, log)
        except LogFormatError as exc:
            raise UserRepairing(user_id) from exc

    # ------------------------------------------------------------------ forgetting
    async def forget(self, user_id: str) -> bool:
        """Delete the user from every tier: the durable history first (a concurrent durable
        write then fails with a gap), then all hot keys at once (the position stays as a
        fence with a new generation: no late commit lands). False: nothing was in Redis."""
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
        position = await self.store.position(user_id, self.version)
        parsed = parse_state(await self.store.get_state(user_id, self.version), self.model)
        state = parsed.state
        if parsed.rebuild == "corrupt":
            raise StateUnreadable(user_id)
        if state is None:
            if position.pending == 0:
                raise UnknownUser(user_id)
            state = empty_state(self.model)  # events acknowledged, none applied yet
        return _view_of(state, position.pending)


# ---------------------------------------------------------------------- what GET /users shows
def served_singular_values(sigma: np.ndarray, rank: int) -> list[float]:
    """The ``rank`` served singular values of a state's σ (ℓ, descending): values at or below
    ``LIVE_TOKEN_RTOL``·σ_1 (a history shorter than r, or of lower rank: masked tokens)
    read 0.0."""
    served = np.asarray(sigma[:rank], dtype=np.float64)  # (r,)
    floor = LIVE_TOKEN_RTOL * float(served[0]) if served.size else 0.0
    return [float(x) if x > floor else 0.0 for x in served]


class UserView(NamedTuple):
    """What ``GET /users/{id}`` shows of a stored state (as stored, stale or not)."""

    history_length: int
    pending: int
    rank: int  # svd: r; elastic: its k tokens; linear, mean: 0
    singular_values: list[float]  # svd: the r served σ, descending, 0.0 past the history's rank
    residual_ratio: float
    last_ts: float | None
    model_version: str
    state_kind: str  # svd, elastic, linear or mean
    state_bytes: int  # size of the stored blob


def _view_of(state: UserState, pending: int) -> UserView:
    """The view of ``state`` with ``pending`` events acknowledged but not applied."""
    return UserView(
        history_length=state.n,
        pending=pending,
        rank=state.token_count,
        singular_values=served_singular_values(state.singular_values, state.token_count),
        residual_ratio=state.residual_ratio,
        last_ts=state.t_ref,
        model_version=StateTag.parse(state.tag).model_version,
        state_kind=state.kind,
        state_bytes=state.nbytes,
    )
