"""Ingest: deduplication, factors equal to a batch recompute, logs, rebuilds, write races."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from model.checkpoint import checkpoint_version
from model.states import Decay, LowRankState
from service.core.applier import Applier
from service.core.ingest import EventColumns, Ingestor, IngestResult
from service.core.serving_model import load_serving_model
from service.errors import ApplyTimeout, StoreBusy, StoreUnavailable
from service.history.memory import MemoryHistory
from service.metrics import Metrics
from service.store.base import Store
from service.store.dedup_ring import digests
from service.store.eventlog import decode_log, identity_keys, make_records
from service.store.keys import partition_of
from service.store.memory import MemoryStore
from service.store.models import MemoryModels
from service.store.redis_client import connect_redis
from service.store.redis_store import RedisStore
from service.stream.memory import MemoryStream
from tests.service.conftest import SettingsFactory
from tests.service.support import event, gram, ingest, reference_state, running_app, until


def encode_events(*columns: Any) -> bytes:
    """The log bytes of events given as ``make_records``'s four columns."""
    return make_records(*columns).tobytes()


pytestmark = pytest.mark.anyio


def _events(raw: list[dict[str, Any]]) -> EventColumns:
    return EventColumns(
        user_ids=[e["user_id"] for e in raw],
        ts=[e["ts"] for e in raw],
        items=[e["item_id"] for e in raw],
        actions=[e.get("action") for e in raw],
        event_ids=[e.get("event_id") for e in raw],
    )


class Pipeline:
    """Ingest → stream → applier over one store, as a serve process with its applier."""

    def __init__(
        self,
        make_settings: SettingsFactory,
        store: Store | None = None,
        history: MemoryHistory | None = None,
        stream: MemoryStream | None = None,
        **kw: Any,
    ) -> None:
        settings = make_settings(**kw)
        self.metrics = Metrics()
        self.store: Store = store if store is not None else MemoryStore()
        self.stream = stream if stream is not None else MemoryStream(settings.partitions)
        self.model = load_serving_model(settings)
        self.history = history if history is not None else MemoryHistory()
        self.ingestor = Ingestor(
            self.store,
            self.stream,
            self.metrics,
            self.history,
            settings.dedup_window,
            self.model.version,
            0.5,
        )
        self.applier = Applier.create(
            settings,
            self.store,
            self.stream,
            self.model,
            self.metrics,
            history=self.history,
            models=MemoryModels(),
        )
        self.users = self.applier.users

    async def ingest(self, raw: list[dict[str, Any]], *, apply: bool = True) -> IngestResult:
        result = await self.ingestor.ingest(_events(raw))
        if apply:
            await self.drain()
        return result

    async def drain(self) -> int:
        """Apply every notice on the stream; the number of notices."""
        seen = 0
        for k in range(self.stream.partitions):
            notices = await self.stream.read(k, self.applier.consumer, 10_000, block_s=0)
            if notices:
                assert await self.applier.apply(k, notices)
            seen += len(notices)
        return seen

    async def state(self, user_id: str) -> LowRankState:
        blob = await self.store.get_state(user_id, self.model.version)
        assert blob is not None
        return LowRankState.from_bytes(blob)

    def rebuilds(self, reason: str, path: str = "apply") -> float | None:
        labels = {"reason": reason, "version": self.model.version, "path": path}
        return self.metrics.registry.get_sample_value("solar_state_rebuilds_total", labels)


def test_events_are_grouped_by_user_in_arrival_order() -> None:
    events = _events([event("b", 1, 1.0), event("a", 2, 2.0), event("b", 3, 3.0)])
    requests = events.by_user()
    assert [r.user_id for r in requests] == ["b", "a"]
    b, a = (decode_log(r.records) for r in requests)
    assert b["ts"].tolist() == [1.0, 3.0] and a["ts"].tolist() == [2.0]
    assert (
        b["item"].tolist() == make_records([0, 0], [1, 3], [None] * 2, [None] * 2)["item"].tolist()
    )
    assert requests[0].digests == digests(identity_keys(b)) and len(requests[1].digests) == 8


async def test_factors_equal_a_batch_recompute(
    make_settings: SettingsFactory, checkpoint_dir: Path
) -> None:
    pipe = Pipeline(make_settings)
    raw = [event("u", i % 43 + 1, float(i), ("click", None, "like")[i % 3]) for i in range(60)]
    for start in range(0, 60, 7):  # several requests, each applied: incremental Brand updates
        await pipe.ingest(raw[start : start + 7])
    state = await pipe.state("u")
    ref = reference_state(str(checkpoint_dir), raw)
    assert state.n == 60 and state.t_ref == 59.0
    np.testing.assert_allclose(state.sigma, ref.sigma, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gram(state), gram(ref), atol=1e-4)
    np.testing.assert_allclose(state.interests(4), ref.interests(4), atol=1e-4)


async def test_the_request_updates_no_factor_and_the_applier_coalesces(
    make_settings: SettingsFactory, checkpoint_dir: Path
) -> None:
    pipe = Pipeline(make_settings)
    raw = [event("u", i % 40 + 1, float(i)) for i in range(30)]
    for start in range(0, 30, 5):
        result = await pipe.ingest(raw[start : start + 5], apply=False)
        assert result.accepted == 5
    assert (
        await pipe.store.get_state("u", pipe.model.version) is None
    )  # nothing applied in the requests
    assert (await pipe.store.position("u", pipe.model.version)).pending == 30
    assert await pipe.drain() == 6  # six notices ...
    registry = pipe.metrics.registry
    assert registry.get_sample_value("solar_apply_batch_events_count") == 1  # ... one update
    assert registry.get_sample_value("solar_apply_batch_events_sum") == 30
    assert registry.get_sample_value("solar_apply_lag_seconds_count") == 1
    assert (await pipe.store.position("u", pipe.model.version)).pending == 0
    ref = reference_state(str(checkpoint_dir), raw)
    np.testing.assert_allclose(gram(await pipe.state("u")), gram(ref), atol=1e-4)
    assert await pipe.drain() == 0


async def test_duplicates_by_event_id_and_by_identity(make_settings: SettingsFactory) -> None:
    pipe = Pipeline(make_settings)
    first = await pipe.ingest([event("u", 1, 1.0, event_id="x"), event("u", 2, 2.0, "click")])
    assert (first.accepted, first.duplicates, first.users) == (2, 0, 1)
    again = await pipe.ingest(
        [
            event("u", 9, 9.0, event_id="x"),  # same id, other content: duplicate
            event("u", 2, 2.0, "click"),  # same identity: duplicate
            event("u", 2, 2.0, "like"),  # other action: new
            event("u", 2, 2.5, "click"),  # other time: new
        ]
    )
    assert (again.accepted, again.duplicates) == (2, 2)
    assert (await pipe.state("u")).n == 4
    registry = pipe.metrics.registry
    assert registry.get_sample_value("solar_ingest_events_total", {"result": "accepted"}) == 4
    assert registry.get_sample_value("solar_ingest_events_total", {"result": "duplicate"}) == 2


async def test_a_retry_of_only_duplicates_announces_only_what_is_unapplied(
    make_settings: SettingsFactory,
) -> None:
    pipe = Pipeline(make_settings)
    raw = [event("u", 1, 1.0), event("u", 2, 2.0)]
    await pipe.ingest(raw, apply=False)  # stored, announced, not applied yet
    assert (await pipe.ingest(raw, apply=False)).duplicates == 2
    assert await pipe.drain() == 2  # the retry announced again: nothing can be left behind
    assert (await pipe.ingest(raw, apply=False)).duplicates == 2
    assert await pipe.drain() == 0  # all applied: a duplicate retry posts nothing
    assert (await pipe.state("u")).n == 2


async def test_wait_returns_once_applied_or_times_out(make_settings: SettingsFactory) -> None:
    pipe = Pipeline(make_settings)
    with pytest.raises(ApplyTimeout, match="not applied within 0.5 s"):
        await pipe.ingestor.ingest(_events([event("u", 1, 1.0)]), wait=True)  # no applier
    runner = asyncio.create_task(pipe.applier.run())
    try:
        result = await pipe.ingestor.ingest(_events([event("u", 2, 2.0)]), wait=True)
        assert result.accepted == 1
        assert (await pipe.store.position("u", pipe.model.version)).pending == 0
        assert (await pipe.state("u")).n == 2
    finally:
        pipe.applier.stop()
        await runner


async def test_the_history_is_durable_and_the_tail_short(make_settings: SettingsFactory) -> None:
    pipe = Pipeline(make_settings)
    await pipe.ingest([event("u", i, float(i)) for i in range(1, 4)], apply=False)
    snapshot = await pipe.store.read_log("u", pipe.model.version, unapplied_only=False)
    assert (snapshot.length, snapshot.durable, snapshot.applied) == (3, 3, 0)  # acknowledged
    assert (await pipe.history.read("u")).last_seq == 3  # ... only once durable
    await pipe.drain()
    await pipe.ingest([event("u", i, float(i)) for i in range(4, 9)])
    assert (await pipe.store.read_log("u", pipe.model.version, unapplied_only=False)).length == 0
    stored = await pipe.history.read("u")
    assert list(decode_log(stored.records)["ts"]) == [float(i) for i in range(1, 9)]
    assert (await pipe.state("u")).n == 8


async def test_a_rebuild_reads_the_whole_history_or_the_operators_cap(
    make_settings: SettingsFactory,
) -> None:
    for cap, expected in ((None, 31), (5, 5)):  # the rebuild runs once event 31 is durable
        pipe = Pipeline(make_settings, log_cap=cap)
        await pipe.ingest([event("u", i, float(i)) for i in range(1, 31)])
        assert await pipe.store.commit_state(
            "u", pipe.model.version, b"garbage", gen=0, expected_applied=30, applied=30
        )
        assert (await pipe.ingest([event("u", 31, 31.0)])).accepted == 1
        assert (await pipe.state("u")).n == expected
        assert pipe.rebuilds("corrupt") == 1


async def test_a_new_model_builds_its_own_state_from_the_whole_history(
    make_settings: SettingsFactory, other_checkpoint_dir: Path, checkpoint_dir: Path
) -> None:
    """States per model version: the new version's first state is the batch state of the
    whole history (no rebuild counted), and the old version's state is left as it was."""
    store = MemoryStore()
    old = Pipeline(make_settings, store=store, model_path=other_checkpoint_dir)
    raw = [event("u", i, float(i), "share") for i in range(1, 11)]
    await old.ingest(raw[:6])
    new = Pipeline(make_settings, store=store, history=old.history)
    assert await store.get_state("u", new.model.version) is None
    await new.ingest(raw[6:])
    state = await new.state("u")
    assert state.tag == new.model.version and state.n == 10
    ref = reference_state(str(checkpoint_dir), raw)
    np.testing.assert_allclose(gram(state), gram(ref), atol=1e-4)
    assert (await old.state("u")).n == 6  # never rewritten by the other version
    assert new.rebuilds("model_version") is None and old.rebuilds("model_version") is None


async def test_corrupt_state_is_rebuilt(make_settings: SettingsFactory) -> None:
    pipe = Pipeline(make_settings)
    await pipe.ingest([event("u", 1, 1.0), event("u", 2, 2.0)])
    snapshot = await pipe.store.read_log("u", pipe.model.version, unapplied_only=False)
    assert await pipe.store.commit_state(
        "u", pipe.model.version, b"garbage", gen=0, expected_applied=2, applied=2
    )
    assert (await pipe.ingest([event("u", 3, 3.0)])).accepted == 1
    assert (await pipe.state("u")).n == 3
    assert pipe.rebuilds("corrupt") == 1
    assert snapshot.seq == 2


async def test_residual_over_threshold_triggers_a_rebuild(make_settings: SettingsFactory) -> None:
    # rank 2 with no oversampling keeps ℓ = 2 < d: a varied history leaves a large residual.
    pipe = Pipeline(make_settings, rank=2, oversample=0, rebuild_residual_ratio=0.05)
    await pipe.ingest([event("u", i, float(i)) for i in range(1, 30)])
    await pipe.ingest([event("u", i, 100.0 + i) for i in range(1, 10)])
    rebuilds = pipe.rebuilds("residual")
    assert rebuilds is not None and rebuilds >= 1
    state = await pipe.state("u")
    assert state.n == 38 and state.ell == 2


class _CountingObserver:
    """Counts the store's operations (one per round trip on Redis)."""

    def __init__(self) -> None:
        self.ops: dict[str, int] = {}

    def op_seconds(self, op: str, seconds: float) -> None:
        self.ops[op] = self.ops.get(op, 0) + 1

    def conflict(self) -> None:
        pass


async def test_a_batch_of_users_is_read_and_committed_in_one_round_trip_each(
    make_settings: SettingsFactory, redis_url: str
) -> None:
    """Four users' notices in one partition batch: on Redis, one read and one commit for
    all of them (docs/DESIGN.md §3), and each state equals the batch recompute."""
    observer = _CountingObserver()
    store = RedisStore(await connect_redis(redis_url), redis_url, observer=observer)
    pipe = Pipeline(make_settings, store=store, partitions=1)
    users = [f"batched-{i}" for i in range(4)]
    try:
        await pipe.ingest([event(u, i + 1, float(i)) for u in users for i in range(5)])
        await pipe.ingest([event(u, i + 1, 10.0 + i) for u in users for i in range(3)], apply=False)
        observer.ops.clear()
        notices = await pipe.stream.read(0, pipe.applier.consumer, 100, block_s=0)
        assert len(notices) == len(users)
        assert await pipe.applier.apply(0, notices)
        assert (observer.ops.get("read_log"), observer.ops.get("commit")) == (1, 1)
        for u in users:
            assert (await pipe.state(u)).n == 8
        assert (await pipe.users.view(users[0])).pending == 0
    finally:
        for u in users:
            await store.delete(u)
        await store.close()


def _one_user_per_partition(prefix: str, partitions: int) -> list[str]:
    by_partition = {partition_of(f"{prefix}-{i}", partitions): f"{prefix}-{i}" for i in range(80)}
    return [by_partition[k] for k in range(partitions)]


async def test_a_running_applier_applies_the_partitions_an_ingest_woke_in_one_round(
    make_settings: SettingsFactory, redis_url: str
) -> None:
    """One ingest's users in four partitions: the four partition tasks it wakes bring their
    notices to one round, so on Redis all four users cost one read and one commit; the next
    ingest opens a new round; the applier stops promptly."""
    observer = _CountingObserver()
    store = RedisStore(await connect_redis(redis_url), redis_url, observer=observer)
    pipe = Pipeline(make_settings, store=store, partitions=4, apply_linger_ms=50.0)
    users = _one_user_per_partition("round", 4)
    await pipe.ingest([event(u, 1, 0.0) for u in users])  # known users (a first state: alone)
    running = asyncio.create_task(pipe.applier.run())

    async def applied() -> bool:
        positions = [await pipe.store.position(u, pipe.model.version) for u in users]
        return all(p.pending == 0 for p in positions)

    try:
        await until(lambda: len(pipe.applier.owned) == 4)
        tasks = dict(pipe.applier._tasks)
        for round_number, start in enumerate((2, 5), start=1):
            observer.ops.clear()
            batch = [event(u, start + i, float(start + i)) for u in users for i in range(3)]
            await pipe.ingest(batch, apply=False)
            await until(applied)
            assert (observer.ops.get("read_log"), observer.ops.get("commit")) == (1, 1)
            assert [(await pipe.state(u)).n for u in users] == [1 + 3 * round_number] * 4
            assert [await pipe.stream.backlog(k) for k in range(4)] == [0, 0, 0, 0]
        # Each round answered its partition tasks: none ended, none was started again.
        assert pipe.applier._tasks == tasks and not any(t.done() for t in tasks.values())
    finally:
        pipe.applier.stop()
        await asyncio.wait_for(running, 1.0)  # no partition task left waiting on a round
        for u in users:
            await store.delete(u)
        await store.close()


class _RefusingStore(MemoryStore):
    """Loses every fenced commit of one user, as if another applier always wrote first."""

    def __init__(self, user_id: str) -> None:
        super().__init__()
        self.user_id = user_id

    async def commit_state(self, user_id: str, version: str, state: bytes, **fence: int) -> bool:
        if user_id == self.user_id:
            return False
        return await super().commit_state(user_id, version, state, **fence)


async def test_a_round_answers_per_partition_and_acknowledges_only_what_was_applied(
    make_settings: SettingsFactory,
) -> None:
    good, bad = _one_user_per_partition("answer", 2)
    pipe = Pipeline(make_settings, store=_RefusingStore(bad), partitions=2)
    await pipe.ingestor.ingest(_events([event(good, 1, 1.0), event(bad, 2, 2.0)]))
    batches = {k: await pipe.stream.read(k, "a", 10, block_s=0) for k in (0, 1)}
    assert await pipe.applier.apply_partitions(batches) == {0: True, 1: False}
    assert [await pipe.stream.backlog(k) for k in (0, 1)] == [0, 1]  # the failed one stays
    assert (await pipe.state(good)).n == 1
    assert await pipe.store.get_state(bad, pipe.model.version) is None


class _AckFailsOnce(MemoryStream):
    """Refuses the first acknowledgement that spans several partitions (a round's)."""

    def __init__(self, partitions: int) -> None:
        super().__init__(partitions)
        self.refused = 0

    async def ack(
        self,
        entries: Mapping[int, Sequence[str]],
        unmark: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        if not self.refused and len([k for k, ids in entries.items() if ids]) > 1:
            self.refused += 1
            raise StoreUnavailable("acknowledgement refused once")
        await super().ack(entries, unmark)


async def test_a_refused_round_acknowledgement_is_recovered_by_every_partition(
    make_settings: SettingsFactory,
) -> None:
    """Every partition task of the round meets the failure, claims its notices again and
    acknowledges them; nothing is applied twice."""
    settings_kw: dict[str, Any] = {"partitions": 3, "apply_linger_ms": 50.0}
    stream = _AckFailsOnce(3)
    pipe = Pipeline(make_settings, stream=stream, **settings_kw)
    users = _one_user_per_partition("refused", 3)
    await pipe.ingest([event(u, 1, 0.0) for u in users])  # known users
    running = asyncio.create_task(pipe.applier.run())

    async def settled() -> bool:
        return [await stream.backlog(k) for k in range(3)] == [0, 0, 0]

    try:
        await until(lambda: len(pipe.applier.owned) == 3)
        await pipe.ingest([event(u, 2 + i, 1.0 + i) for u in users for i in range(2)], apply=False)
        await until(settled)
        assert stream.refused == 1
        assert [(await pipe.state(u)).n for u in users] == [3, 3, 3]
    finally:
        pipe.applier.stop()
        await asyncio.wait_for(running, 1.0)


class _RacingStore(MemoryStore):
    """Loses the first ``losses`` fenced commits, as if another applier wrote first."""

    def __init__(self, losses: int) -> None:
        super().__init__()
        self.losses = losses

    async def commit_state(self, user_id: str, version: str, state: bytes, **fence: int) -> bool:
        if self.losses > 0:
            self.losses -= 1
            return False
        return await super().commit_state(user_id, version, state, **fence)


async def test_lost_commits_are_retried(make_settings: SettingsFactory) -> None:
    pipe = Pipeline(make_settings, store=_RacingStore(losses=3))
    await pipe.ingest([event("u", 1, 1.0)])
    assert (await pipe.state("u")).n == 1


async def test_too_many_lost_commits_leave_the_notice_pending(
    make_settings: SettingsFactory,
) -> None:
    pipe = Pipeline(make_settings, store=_RacingStore(losses=100))
    await pipe.ingestor.ingest(_events([event("u", 1, 1.0)]))
    with pytest.raises(StoreBusy):
        await pipe.users.apply_pending("u")
    k = partition_of("u", pipe.stream.partitions)
    assert await pipe.stream.backlog(k) == 1
    notices = await pipe.stream.read(k, "a", 10, block_s=0)
    assert not await pipe.applier.apply(k, notices)  # failed: not acknowledged
    assert await pipe.stream.backlog(k) == 1
    assert await pipe.store.get_state("u", pipe.model.version) is None


@pytest.mark.parametrize("path", ["ingest", "rank"])
async def test_lost_state_key_is_rebuilt_from_the_log(
    make_settings: SettingsFactory, redis_url: str, path: str, checkpoint_dir: Path
) -> None:
    """Only the state key gone (an eviction): history comes back from the log, not from zero."""
    history = [event("u1", item, 100.0 + i) for i, item in enumerate([1, 2, 3, 4, 5, 6])]
    async with running_app(make_settings(redis_url=redis_url)) as (_, client):
        await ingest(client, history)
        with redis.Redis.from_url(redis_url) as raw:
            assert raw.delete(f"solar:{{u1}}:state:{checkpoint_version(checkpoint_dir)}") == 1
        if path == "ingest":
            await ingest(client, [event("u1", 7, 200.0)])
            expected = len(history) + 1
        else:
            response = await client.post("/rank", json={"user_id": "u1", "candidates": [1, 2]})
            assert response.json()["history_length"] == len(history)
            expected = len(history)
        user = (await client.get("/users/u1")).json()
        assert user["history_length"] == expected
        metrics = (await client.get("/metrics")).text
        where = "apply" if path == "ingest" else "rank"
        assert f'reason="missing",version="{checkpoint_version(checkpoint_dir)}"' in metrics
        assert f'path="{where}"' in metrics


async def test_changed_half_life_rebuilds_instead_of_mixing_weights(
    make_settings: SettingsFactory,
) -> None:
    """States built without decay are not mixed with decayed updates after a config change."""
    store = MemoryStore()
    plain = Pipeline(make_settings, store=store)
    raw = [event("u", i, 100.0 * i) for i in range(1, 11)]
    await plain.ingest(raw[:6])
    decayed = Pipeline(make_settings, store=store, history=plain.history, half_life_s=300.0)
    await decayed.ingest(raw[6:])
    state = await decayed.state("u")
    assert state.tag == str(decayed.model.state_tag) != str(plain.model.state_tag)
    ts = np.array([e["ts"] for e in raw])
    assert state.n_eff == pytest.approx(float(Decay(300.0).weights(ts, ts.max()).sum()))
    assert decayed.rebuilds("config") == 1
