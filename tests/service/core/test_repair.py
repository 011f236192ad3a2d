"""Hot keys lost by hand on a real Redis are rebuilt from the durable tier before the user
takes more events (service.core.repair), and the sweeper applies users whose ingest stored
events but never announced them (service.core.applier)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from service.core.applier import Applier
from service.core.ingest import EventColumns, Ingestor
from service.core.serving_model import load_serving_model
from service.history.memory import MemoryHistory
from service.metrics import Metrics
from service.store.keys import partition_of
from service.store.memory import MemoryStore
from service.store.models import MemoryModels
from service.store.redis_client import connect_redis
from service.store.redis_store import RedisStore
from service.stream.base import dirty_member
from service.stream.memory import MemoryStream
from tests.service.conftest import SettingsFactory

pytestmark = pytest.mark.anyio


def _columns(user: str, ids: range) -> EventColumns:
    return EventColumns(
        user_ids=[user] * len(ids),
        ts=[float(i) for i in ids],
        items=[1 + i % 7 for i in ids],
        actions=[None] * len(ids),
        event_ids=[f"{user}-{i}" for i in ids],
    )


class _DiesBeforeAnnouncing(MemoryStream):
    """A stream whose announce never arrives, as if the serve died right after storing."""

    async def post_batch(self, notices: Any, posted_s: float, token: str = "") -> None:
        raise ConnectionError("killed")


def _marked_pipeline(settings: Any) -> tuple[MemoryStore, MemoryStream, Ingestor, Applier]:
    """An in-process store, stream, ingest and applier (no durable tier of its own: memory)
    for the mark tests."""
    store, history, metrics, stream = MemoryStore(), MemoryHistory(), Metrics(), MemoryStream(4)
    model = load_serving_model(settings)
    ingestor = Ingestor(
        store, stream, metrics, history, settings.dedup_window, model.version, grace_s=5.0
    )
    applier = Applier.create(
        settings, store, stream, model, metrics, history=history, models=MemoryModels()
    )
    return store, stream, ingestor, applier


@pytest.mark.parametrize("key", ["dedup", "pos", "log"])
async def test_a_lost_hot_key_is_rebuilt_and_nothing_applies_twice(
    key: str, make_settings: SettingsFactory, redis_url: str
) -> None:
    settings = make_settings(redis_url=redis_url)
    store = RedisStore(await connect_redis(redis_url), redis_url)
    raw = aioredis.Redis.from_url(redis_url)
    history, stream, metrics = MemoryHistory(), MemoryStream(4), Metrics()
    model = load_serving_model(settings)
    ingestor = Ingestor(store, stream, metrics, history, settings.dedup_window, model.version)
    applier = Applier.create(
        settings, store, stream, model, metrics, history=history, models=MemoryModels()
    )
    try:
        assert (await ingestor.ingest(_columns("u", range(1, 41)))).accepted == 40
        assert await raw.delete(f"solar:{{u}}:{key}") == 1
        again = await ingestor.ingest(_columns("u", range(21, 61)))  # 20 old, 20 new
        assert (again.accepted, again.duplicates) == (20, 20)
        assert metrics.hot_repairs.labels(outcome="restored")._value.get() == 1
        assert (await applier.users.apply_pending("u")).events == 60
        snapshot = await store.read_log("u", model.version, unapplied_only=False)
        assert (snapshot.seq, snapshot.applied, snapshot.durable) == (60, 60, 60)
        assert (await history.read("u")).events == 60
    finally:
        await raw.aclose()
        await store.close()


async def test_the_sweeper_applies_stored_but_unannounced_users(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(sweep_grace_s=0.001)
    store, history, metrics = MemoryStore(), MemoryHistory(), Metrics()
    stream = _DiesBeforeAnnouncing(4)
    model = load_serving_model(settings)
    ingestor = Ingestor(
        store, stream, metrics, history, settings.dedup_window, model.version, grace_s=5.0
    )
    with pytest.raises(ConnectionError):
        await ingestor.ingest(_columns("u", range(1, 11)))
    assert (await store.position("u", model.version)).pending == 10
    assert await stream.backlog(0) == 0
    applier = Applier.create(
        settings, store, stream, model, metrics, history=history, models=MemoryModels()
    )
    k = partition_of("u", 4)
    assert await stream.dirty_count(k) == 1  # marked before storing: the sweeper's net
    await asyncio.sleep(0.01)  # the mark is older than the grace
    assert await applier.sweep(k) == 10
    assert (await store.position("u", model.version)).pending == 0
    assert metrics.ingest_unannounced.labels(partition=str(k))._value.get() == 10
    assert await stream.dirty_count(k) == 0 and await applier.sweep(k) == 0


async def test_an_acknowledgement_removes_only_its_own_calls_mark(
    make_settings: SettingsFactory,
) -> None:
    """Each ingest call marks its users with a member of its own, and acknowledging a call's
    notice removes that member only. Another call's member of the same user (a call that
    may still be storing, until its mark plus the grace) stays for the sweeper: with one
    member per user, the later call's acknowledgement would have cleared it."""
    settings = make_settings(sweep_grace_s=0.001)
    store, stream, ingestor, applier = _marked_pipeline(settings)
    version = ingestor.model_version
    k = partition_of("u", 4)
    in_flight_s = time.time()
    await stream.mark(["u"], in_flight_s, "in-flight")  # an earlier call, still storing
    await ingestor.ingest(_columns("u", range(1, 11)))
    notices = await stream.read(k, "a", count=10, block_s=0.0)
    assert len(notices) == 1 and notices[0].token
    assert await applier.apply(k, notices)
    assert (await store.position("u", version)).pending == 0
    assert await stream.dirty(k, time.time(), count=10) == [
        (dirty_member("u", "in-flight"), in_flight_s)
    ]
    await asyncio.sleep(0.01)  # past the grace: the sweeper takes the other call's member
    assert await applier.sweep(k) == 0
    assert await stream.dirty_count(k) == 0


class _StoresLateAndDies:
    """The rest of an earlier ingest call whose mark is already in: it stores and writes
    durably, then its serve dies before announcing."""

    def __init__(self, stream: MemoryStream) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def mark(self, user_ids: Any, now_s: float, token: str = "") -> None:
        return None

    async def post_batch(self, notices: Any, posted_s: float, token: str = "") -> None:
        raise ConnectionError("killed")


async def test_events_an_earlier_call_stores_after_a_later_calls_ack_are_swept(
    make_settings: SettingsFactory,
) -> None:
    """The race a mark per user had: call Y marks u, call X marks u, stores, is announced,
    applied and acknowledged; only then does Y store, and its serve dies before announcing.
    Y's own member outlived X's acknowledgement, so the sweeper applies Y's events."""
    settings = make_settings(sweep_grace_s=0.001)
    store, stream, later, applier = _marked_pipeline(settings)
    version = later.model_version
    earlier = dataclasses.replace(later, stream=_StoresLateAndDies(stream))
    k = partition_of("u", 4)
    await stream.mark(["u"], time.time(), "call-y")  # Y's mark, before X's
    await later.ingest(_columns("u", range(1, 11)))
    assert await applier.apply(k, await stream.read(k, "a", count=10, block_s=0.0))
    with pytest.raises(ConnectionError):
        await earlier.ingest(_columns("u", range(11, 16)))  # Y stores late, then dies
    assert (await store.position("u", version)).pending == 5
    await asyncio.sleep(0.01)
    assert await applier.sweep(k) == 5
    assert (await store.position("u", version)).pending == 0
    assert await stream.dirty_count(k) == 0


async def test_a_replay_of_applied_events_leaves_no_mark(make_settings: SettingsFactory) -> None:
    """A call that leaves a user nothing unapplied (a client's replay of applied events)
    announces nothing and removes its own member at once: replays do not pile up members."""
    settings = make_settings()
    _, stream, ingestor, applier = _marked_pipeline(settings)
    k = partition_of("u", 4)
    await ingestor.ingest(_columns("u", range(1, 11)))
    assert await applier.apply(k, await stream.read(k, "a", count=10, block_s=0.0))
    for _ in range(3):
        assert (await ingestor.ingest(_columns("u", range(1, 11)))).duplicates == 10
    assert await stream.backlog(k) == 0 and await stream.dirty_count(k) == 0
