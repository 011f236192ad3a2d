"""The applier (docs/DESIGN.md §3): owns partitions of the ingest stream and folds the notified
users' events into their states.

One ``Applier`` per process (``solar worker``, or inside ``solar serve`` unless
``SOLAR_APPLIER=external``). Every ``lease_s / 3`` it heartbeats, renews the leases it holds
and takes free ones up to its share, ``ceil(P / live appliers)``; each partition it holds runs
a task that first claims the partition's pending notices (a dead owner's), then reads new
ones. Notices the tasks read within ``linger_s`` of each other form one round: coalesced per
user, each user applied ONCE (``UserStates.apply_pending``: all of the user's unapplied
records as one block update, fenced on the position read), and only then acknowledged, with
one read, one commit and one acknowledgement round trip for the whole round. A user whose
apply failed keeps its notices pending; the task claims them again.
A task whose lease was lost stops after its current round; the fence keeps the overlap safe.
Stopping is a flag (:meth:`Applier.stop`), not cancellation; see there.

Rollouts (docs/DESIGN.md §3): each lease round also follows the registry of model versions
(``service.core.model_versions``), and each user's events are applied to the state of every
registered version, each advanced from its own covered position; a user's notices are
acknowledged once every version committed.

Users are isolated: whatever fails for one user (a tier down, a malformed key, a bug) is
logged and leaves that user's notices pending for a later claim; the rest of the batch is
applied and acknowledged.

The sweeper: every ``sweep_s`` a partition task lists the users its ingests marked dirty
more than ``sweep_grace_s`` ago (``IngestStream.mark``), applies each (which also writes its
undurable tail to the durable tier) and clears the marks that did not move meanwhile. A serve
killed between its store and announce steps leaves its users marked, so their events are
applied within ``sweep_grace_s + sweep_s`` without any notice; ``solar_ingest_unannounced``
counts the events a sweep found that way. A mark is one member per user and ingest call, and
the call's notice carries its token: acknowledging the notice removes that call's member, so
the sweeper reads only users whose notice never came, while a member of another call of the
same user (which may still be storing) stays for that call's notice or the sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from service.core.model_versions import AppliedVersions
from service.core.serving_model import ServingModel
from service.core.users import Applied, UserStates
from service.errors import ServiceError, StoreError
from service.history.base import HistoryStore
from service.metrics import Metrics
from service.settings import Settings
from service.store.base import Store
from service.store.models import ModelRegistry
from service.stream.base import IngestStream, Notice, dirty_member, marked_user

__all__ = ["Applier", "ApplierConfig"]

logger = logging.getLogger(__name__)

_FAILURE_PAUSE_S = 0.2


@dataclass(frozen=True)
class ApplierConfig:
    """Knobs of an applier (from ``Settings``)."""

    lease_s: float = 5.0  # a dead applier's partitions are taken over after this
    read_count: int = 512  # notices per read
    block_s: float = 0.2  # how long a read waits for notices
    users_in_flight: int = 16  # users applied alone concurrently within a round
    sweep_s: float = 1.0  # how often a partition's marked users are swept
    sweep_grace_s: float = 5.0  # the sweeper applies users marked longer ago than this
    linger_s: float = 0.005  # wait after notices arrive, before reading their users' logs


@dataclass
class _Round:
    """Notices of several partitions applied together (``Applier._apply_in_round``):
    ``{partition: notices}``, when the last of them joined (event-loop time, s), and the task
    applying them, whose result is each partition's outcome."""

    last_join_s: float
    batches: dict[int, list[Notice]] = field(default_factory=dict)
    task: asyncio.Task[dict[int, bool]] = field(init=False)


def applier_id() -> str:
    """A consumer name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class Applier:
    users: UserStates
    stream: IngestStream
    metrics: Metrics
    config: ApplierConfig = field(default_factory=ApplierConfig)
    versions: AppliedVersions | None = None  # None: the own model's version only
    consumer: str = field(default_factory=applier_id)
    _tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict, init=False, repr=False)
    _held: set[int] = field(default_factory=set, init=False, repr=False)
    _stopping: bool = field(default=False, init=False, repr=False)
    _wake: asyncio.Event | None = field(default=None, init=False, repr=False)
    _round: _Round | None = field(default=None, init=False, repr=False)
    _round_tasks: set[asyncio.Task[dict[int, bool]]] = field(
        default_factory=set, init=False, repr=False
    )

    @classmethod
    def create(
        cls,
        settings: Settings,
        store: Store,
        stream: IngestStream,
        model: ServingModel,
        metrics: Metrics,
        *,
        history: HistoryStore,
        models: ModelRegistry,
    ) -> Applier:
        """The applier of a process, configured by ``settings``, applying to every version
        registered in ``models``."""
        users = UserStates.create(settings, store, model, metrics, history=history)
        config = ApplierConfig(
            lease_s=settings.apply_lease_s,
            sweep_s=settings.sweep_s,
            sweep_grace_s=settings.sweep_grace_s,
            linger_s=settings.apply_linger_ms / 1e3,
        )
        versions = AppliedVersions(users, models, settings, store, history, metrics)
        return cls(users, stream, metrics, config, versions)

    def _states(self) -> list[UserStates]:
        """The user states applied to: every registered version's, or the own one's."""
        return [self.users] if self.versions is None else self.versions.current

    @property
    def owned(self) -> list[int]:
        """Partitions this applier holds now."""
        return sorted(self._held)

    async def run(self) -> None:
        """Hold leases and apply until :meth:`stop` (or cancellation); then let the partition
        tasks finish their batch and release the leases."""
        self._wake = asyncio.Event()
        try:
            while not self._stopping:
                try:
                    await self._rebalance()
                except StoreError as exc:
                    logger.warning("applier %s: lease round failed: %s", self.consumer, exc)
                try:
                    if self.versions is not None:
                        await self.versions.refresh()
                except StoreError as exc:
                    logger.warning("applier %s: model registry unread: %s", self.consumer, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.lease_s / 3)
        finally:
            self._stopping = True
            await self._shutdown()

    def stop(self) -> None:
        """Ask :meth:`run` to return (each partition task ends after its current batch).

        A stop flag, not task cancellation: redis-py can swallow the cancellation of a
        command in flight, so a cancelled loop might go on."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    def _reap(self) -> None:
        """Forget partition tasks that ended (a bug, logged): this round may take them again."""
        for k, task in list(self._tasks.items()):
            if task.done():
                del self._tasks[k]
                self._held.discard(k)
                if not task.cancelled() and task.exception() is not None:
                    logger.error("applier partition %d failed", k, exc_info=task.exception())

    async def _rebalance(self) -> None:
        self._reap()
        live = await self.stream.heartbeat(self.consumer, 3 * self.config.lease_s)
        share = math.ceil(self.stream.partitions / max(1, live))
        for k in self.owned:  # renew first: a lost lease ends its task after the batch
            if not await self.stream.acquire(k, self.consumer, self.config.lease_s):
                logger.warning("applier %s lost partition %d", self.consumer, k)
                self._held.discard(k)
        for k in self.owned[share:]:  # give back what is over the share, once its task ended
            self._held.discard(k)
            await self._tasks.pop(k)
            await self.stream.release(k, self.consumer)
        for k in range(self.stream.partitions):
            if len(self._held) >= share or self._stopping:
                break
            if k not in self._tasks and await self.stream.acquire(
                k, self.consumer, self.config.lease_s
            ):
                self._held.add(k)
                self._tasks[k] = asyncio.create_task(self._partition(k), name=f"apply-p{k}")

    async def _shutdown(self) -> None:
        self._held.clear()
        tasks = dict(self._tasks)
        self._tasks.clear()
        if tasks:
            _, late = await asyncio.wait(tasks.values(), timeout=4 * self.config.block_s + 1.0)
            for task in late:
                task.cancel()
        if self._round_tasks:  # a round outlives a cancelled partition task (it is shielded)
            _, running = await asyncio.wait(set(self._round_tasks), timeout=1.0)
            for round_task in running:
                round_task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        for k in tasks:
            try:
                await self.stream.release(k, self.consumer)
            except StoreError:
                pass  # the lease expires by itself
        try:
            # Else the others count this applier live for 3 leases and leave its share of the
            # partitions unowned that long (a restarted worker took half of them for 15 s).
            await self.stream.leave(self.consumer)
        except StoreError:
            pass  # the heartbeat expires by itself

    async def _partition(self, k: int) -> None:
        claim = True  # a new owner first takes over what the last one left pending
        next_sweep = time.monotonic()  # the first round sweeps and sets the pending gauge
        while k in self._held and not self._stopping:
            try:
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.config.sweep_s
                    await self.sweep(k)
                    await self._report_backlog(k)
                if claim:
                    notices = await self.stream.claim(k, self.consumer, self.config.read_count)
                    claim = len(notices) == self.config.read_count
                    if notices:
                        claim = not await self.apply(k, notices) or claim
                else:
                    notices = await self.stream.read(
                        k, self.consumer, self.config.read_count, self.config.block_s
                    )
                    if notices:
                        claim = not await self._apply_in_round(k, notices) or claim
            except StoreError as exc:
                logger.warning("applier %s partition %d: %s", self.consumer, k, exc)
                claim = True
                await asyncio.sleep(_FAILURE_PAUSE_S)

    async def _report_backlog(self, k: int) -> None:
        """Set the partition's pending gauge: notices not acknowledged plus dirty members (one
        per user and ingest call not yet cleared; two round trips: once per sweep, not once
        per batch)."""
        backlog = await self.stream.backlog(k) + await self.stream.dirty_count(k)
        self.metrics.ingest_pending.labels(partition=str(k)).set(backlog)

    async def apply(self, partition: int, notices: list[Notice]) -> bool:
        """Apply every notified user once and acknowledge their notices; False when some
        user failed (its notices stay pending)."""
        return (await self.apply_partitions({partition: notices}))[partition]

    async def apply_partitions(self, batches: Mapping[int, list[Notice]]) -> dict[int, bool]:
        """:meth:`apply` of the notices of several partitions at once: their users' reads,
        their commits and the acknowledgements cost one round trip each for all of them.
        Per partition: False when some user failed (its notices stay pending).

        Raises:
            StoreError: the acknowledgement failed. It is not atomic: notices whose
                acknowledgement landed are gone, the rest stay pending (applying them again
                applies nothing twice).
        """
        by_user: dict[str, list[tuple[int, Notice]]] = {}
        for k, notices in batches.items():
            for notice in notices:
                by_user.setdefault(notice.user_id, []).append((k, notice))
        through = [(u, max(n.seq for _, n in ns)) for u, ns in by_user.items()]
        acked: dict[int, list[str]] = {k: [] for k in batches}
        unmark: dict[int, list[str]] = {k: [] for k in batches}
        outcomes = await self._apply_users(through)
        for (user_id, _), (applied, applied_s) in zip(through, outcomes, strict=True):
            if applied is None:
                continue
            user_notices = by_user[user_id]
            if applied.events:
                self.metrics.apply_batch_events.observe(applied.events)
                oldest_s = min(n.posted_s for _, n in user_notices)
                self.metrics.apply_lag_seconds.observe(max(0.0, applied_s - oldest_s))
            for k, n in user_notices:
                acked[k].append(n.entry_id)
                if n.token:  # the call's own mark: another call's stays
                    unmark[k].append(dirty_member(user_id, n.token))
        await self.stream.ack(acked, unmark)
        return {k: len(acked[k]) == len(notices) for k, notices in batches.items()}

    async def _apply_in_round(self, partition: int, notices: list[Notice]) -> bool:
        """:meth:`apply` of notices just read, in the round open now or in a new one: a round
        takes what every partition task brings it within ``linger_s`` of its opening, then
        applies it together (:meth:`apply_partitions`) once the last notice that joined has
        waited ``linger_s`` too (so at most 2 × ``linger_s`` after the round opened). An
        ingest's users spread over the partitions, so alone each task paid three round trips
        for one or two users.

        The wait itself is older: a notice can overtake its ingest's durable mark (both are
        sent at once), and applying then would write the events to the durable tier a second
        time (12-25% of blocks raced without it).
        """
        loop = asyncio.get_running_loop()
        current = self._round
        if current is None:
            current = self._round = _Round(loop.time())
            current.task = asyncio.create_task(self._run_round(current), name="apply-round")
            self._round_tasks.add(current.task)  # held until done: the loop's refs are weak
            current.task.add_done_callback(self._round_tasks.discard)
        current.batches.setdefault(partition, []).extend(notices)
        current.last_join_s = loop.time()
        # Shielded: a partition task cancelled while it waits leaves the round to the others.
        # The round's error (or cancellation) reaches every task, as when each applied alone.
        return (await asyncio.shield(current.task))[partition]

    async def _run_round(self, current: _Round) -> dict[int, bool]:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(self.config.linger_s)
        finally:  # cancelled too: notices read from now on open the next round
            if self._round is current:
                self._round = None
        late_s = current.last_join_s + self.config.linger_s - loop.time()
        if late_s > 0:
            await asyncio.sleep(late_s)
        return await self.apply_partitions(current.batches)

    async def _apply_users(
        self, through: list[tuple[str, int]]
    ) -> list[tuple[Applied | None, float]]:
        """Every (user, through_seq) applied for every version: per version, the users' reads
        in one round trip and their commits in one pipeline
        (``UserStates.apply_pending_many``); the users that path leaves unsettled are applied
        alone, isolated, ``users_in_flight`` at a time. Per user: the own version's outcome
        (None when it failed, logged, in some version) and when its last version was
        written (unix seconds: what the apply lag counts to)."""
        states = self._states()
        outcomes: list[Applied | None] = [Applied(0, None)] * len(through)
        applied_s = [0.0] * len(through)
        failed = [False] * len(through)
        gate = asyncio.Semaphore(self.config.users_in_flight)

        async def alone(users: UserStates, i: int) -> tuple[Applied | None, float]:
            async with gate:
                user_id, through_seq = through[i]
                applied = await self._apply_user(user_id, through_seq, [users])
                return applied, time.time()

        for v, users in enumerate(states):
            try:
                settled = await users.apply_pending_many(through)
            except Exception as exc:
                # One user's key can fail the whole round trip: each is then applied alone,
                # so a broken user never holds back the rest of its batch.
                logger.warning("batched apply of %d users failed: %s", len(through), exc)
                settled = [None] * len(through)
            settled_s = [time.time()] * len(through)
            rest = [i for i, applied in enumerate(settled) if applied is None and not failed[i]]
            alone_outcomes = await asyncio.gather(*(alone(users, i) for i in rest))
            for i, (applied, at_s) in zip(rest, alone_outcomes, strict=True):
                settled[i], settled_s[i] = applied, at_s
            for i, applied in enumerate(settled):
                failed[i] = failed[i] or applied is None
                applied_s[i] = settled_s[i]
                if v == 0 and applied is not None:
                    outcomes[i] = applied
        return [(None if failed[i] else outcomes[i], applied_s[i]) for i in range(len(through))]

    async def _apply_user(
        self,
        user_id: str,
        through_seq: int | None = None,
        states: list[UserStates] | None = None,
    ) -> Applied | None:
        """``UserStates.apply_pending`` for every version (or those of ``states``), isolated
        to the user: None (logged) when it failed, so one broken user never blocks the rest of
        its batch nor ends the partition task. The first version's outcome."""
        if states is None:
            states = self._states()
        try:
            outcomes = [
                await users.apply_pending(user_id, through_seq=through_seq) for users in states
            ]
            return outcomes[0]
        except (StoreError, ServiceError) as exc:  # a tier down, fence races: retried later
            logger.warning("apply %s failed, will retry: %s", user_id, exc)
        except Exception:  # the per-user isolation boundary: a bug must not stop the others
            logger.exception("apply %s failed unexpectedly, will retry", user_id)
        return None

    async def sweep(self, partition: int) -> int:
        """Apply the partition's users marked dirty longer than the grace period ago and
        clear their marks; the events it found unapplied (stored but never announced, or
        announced but not applied in time)."""
        before_s = time.time() - self.config.sweep_grace_s
        marks = await self.stream.dirty(partition, before_s, self.config.read_count)
        by_user: dict[str, list[tuple[str, float]]] = {}
        for member, mark in marks:
            by_user.setdefault(marked_user(member), []).append((member, mark))
        found = 0
        done: list[tuple[str, float]] = []
        gate = asyncio.Semaphore(self.config.users_in_flight)

        async def one(user_id: str) -> None:
            nonlocal found
            async with gate:
                applied = await self._apply_user(user_id)
            if applied is not None:
                found += applied.events
                done.extend(by_user[user_id])

        await asyncio.gather(*(one(u) for u in by_user))
        await self.stream.clean(partition, done)
        self.metrics.ingest_unannounced.labels(partition=str(partition)).set(found)
        if found:
            logger.warning("sweep of partition %d applied %d unannounced events", partition, found)
        return found
