"""Replicas sharing one Redis: no lost update under concurrent ingest, and recovery when
Redis goes away and comes back."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from model.states import LowRankState
from service.errors import StoreUnavailable
from service.store.eventlog import decode_log
from service.store.redis_client import connect_redis
from service.store.redis_store import RedisStore
from solar_tools.redis_server import RedisServer, free_port
from tests.service.conftest import SettingsFactory
from tests.service.support import event, gram, ingest, reference_state, running_app

pytestmark = pytest.mark.anyio

USERS = ("c0", "c1", "c2")


def _event_pool(rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """40 distinct events per user; half carry an event id."""
    pool: dict[str, list[dict[str, Any]]] = {}
    for u in USERS:
        pool[u] = [
            event(
                u,
                rng.choice([*range(1, 41), "alpha", "beta", "x-unknown"]),
                1_000.0 + j + rng.random(),
                rng.choice([None, "click", "like"]),
                f"{u}-{j}" if j % 2 else None,
            )
            for j in range(40)
        ]
    return pool


async def test_concurrent_ingest_on_two_replicas_equals_a_batch_recompute(
    make_settings: SettingsFactory,
    redis_url: str,
    checkpoint_dir: Path,
    shared_history: dict[str, str],
) -> None:
    rng = random.Random(7)
    pool = _event_pool(rng)
    requests = []
    for _ in range(50):
        batch = [e for u in USERS for e in rng.sample(pool[u], rng.randint(1, 6))]
        rng.shuffle(batch)
        requests.append(batch)
    settings = make_settings(redis_url=redis_url, **shared_history)
    async with running_app(settings) as (app_a, a), running_app(settings) as (app_b, b):
        clients = (a, b)
        responses = await asyncio.gather(
            *(
                clients[i % 2].post("/ingest?wait=true", json={"events": r})
                for i, r in enumerate(requests)
            )
        )
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        bodies = [r.json() for r in responses]
        sent = [e for r in requests for e in r]
        distinct: dict[str, list[dict[str, Any]]] = {u: [] for u in USERS}
        seen: set[str] = set()
        for e in sent:
            key = repr(sorted(e.items()))
            if key not in seen:
                seen.add(key)
                distinct[e["user_id"]].append(e)
        assert sum(b["accepted"] for b in bodies) == len(seen)
        assert sum(b["duplicates"] for b in bodies) == len(sent) - len(seen)

        store = RedisStore(await connect_redis(redis_url), redis_url)
        try:
            for u in USERS:
                record = await store.read_log(u, app_a.state.model.version, unapplied_only=False)
                assert record.state is not None and record.seq == record.applied
                state = LowRankState.from_bytes(record.state)
                log = decode_log((await app_a.state.history.read(u)).records)
                assert state.n == len(log) == len(distinct[u])
                assert sorted(log["ts"].tolist()) == sorted(e["ts"] for e in distinct[u])
                ref = reference_state(str(checkpoint_dir), distinct[u])
                np.testing.assert_allclose(state.sigma, ref.sigma, rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(gram(state), gram(ref), atol=1e-4)
                assert state.t_ref == pytest.approx(ref.t_ref)
        finally:
            await store.close()
        conflicts = sum(
            app.state.metrics.registry.get_sample_value("solar_store_conflicts_total") or 0.0
            for app in (app_a, app_b)
        )
        # Two appliers share the partitions by lease: a user has one writer, so the fenced
        # commit (almost) never loses; a take-over race may cost one.
        assert conflicts <= 2


async def _wait_ready(client: httpx.AsyncClient, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "service did not recover"
        await asyncio.sleep(0.05)


async def test_redis_outage_is_503_and_the_service_recovers(
    make_settings: SettingsFactory, redis_url: str, redis_server: RedisServer
) -> None:
    settings = make_settings(redis_url=redis_url, store_timeout_s=0.5)
    rank = {"user_id": "u", "candidates": [1, 2, 3]}
    events = {"events": [event("u", 4, 4.0)]}
    async with running_app(settings) as (app, client):
        await ingest(client, [event("u", i, float(i)) for i in range(1, 4)])
        try:
            redis_server.stop()
            for call in (client.post("/rank", json=rank), client.post("/ingest", json=events)):
                start = time.monotonic()
                response = await call
                assert response.status_code == 503, response.text
                assert "Retry-After" in response.headers
                assert time.monotonic() - start < 3 * settings.store_timeout_s
            assert (await client.get("/readyz")).status_code == 503
            assert (await client.get("/healthz")).status_code == 200  # alive, not ready
        finally:
            redis_server.start()
        await _wait_ready(client, timeout_s=5.0)
        assert (await client.post("/ingest?wait=true", json=events)).status_code == 200
        response = await client.post("/rank", json=rank)
        assert response.status_code == 200
        # A fresh Redis: the user's hot keys are rebuilt from the durable tier, which kept
        # its three events, so nothing acknowledged was lost.
        assert response.json()["history_length"] == 4
        text = (await client.get("/metrics")).text
        assert 'solar_rejected_total{reason="store_unavailable"} 2.0' in text


async def test_a_frozen_redis_times_out_as_503(
    make_settings: SettingsFactory, redis_url: str, redis_server: RedisServer
) -> None:
    settings = make_settings(redis_url=redis_url, store_timeout_s=0.3)
    async with running_app(settings) as (_, client):
        await ingest(client, [event("u", 1, 1.0)])
        try:
            redis_server.pause()
            start = time.monotonic()
            response = await client.post("/rank", json={"user_id": "u", "candidates": [1]})
            elapsed = time.monotonic() - start
            assert response.status_code == 503
            assert elapsed < 5 * settings.store_timeout_s
            assert (await client.get("/readyz")).status_code == 503
        finally:
            redis_server.resume()
        await _wait_ready(client, timeout_s=5.0)
        response = await client.post("/rank", json={"user_id": "u", "candidates": [1]})
        assert response.status_code == 200 and response.json()["history_length"] == 1


async def test_startup_gives_up_on_an_unreachable_redis(make_settings: SettingsFactory) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = make_settings(redis_url=url, store_connect_retries=2, store_backoff_s=0.01)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="3 attempts"):
        async with running_app(settings):
            pass
    assert time.monotonic() - start < 5.0
