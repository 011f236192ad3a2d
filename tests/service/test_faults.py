"""Faults against real processes (DESIGN §3, issue: ingest stream): an applier SIGKILLed
mid-batch, Redis killed and restarted under load, two serves and two workers on hot users,
and one end-to-end run on a real Redis Cluster.

Every test checks the same invariant at the end: each user's state covers exactly the
distinct events that were acknowledged (none lost, none applied twice), and its factors equal
a batch recompute of those events.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from model.states import LowRankState
from solar_tools.processes import Serve, Worker
from solar_tools.redis_server import RedisServer
from tests.service.support import event, gram, reference_state

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _env(checkpoint_dir: Path, url: str, **extra: str) -> dict[str, str]:
    return {
        "SOLAR_MODEL_PATH": str(checkpoint_dir),
        "SOLAR_REDIS_URL": url,
        "SOLAR_MAX_WAIT_MS": "1",
        "SOLAR_APPLY_LEASE_S": "1",
        "SOLAR_STORE_TIMEOUT_S": "0.5",
        "SOLAR_STORE_CONNECT_RETRIES": "20",
        "SOLAR_HALF_LIFE_S": "0",
        **extra,
    }


def _events(users: list[str], per_user: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = [
        event(
            u,
            rng.choice([*range(1, 41), "alpha", "beta"]),
            1_000.0 + j + rng.random(),
            rng.choice([None, "click"]),
            f"{u}-{j}",
        )  # fmt: skip
        for u in users
        for j in range(per_user)
    ]
    rng.shuffle(out)
    return out


def _post_until_acknowledged(client: httpx.Client, batch: list[dict[str, Any]]) -> int:
    """POST /ingest, retrying 503s after their Retry-After; the accepted count."""
    for _ in range(200):
        try:
            response = client.post("/ingest", json={"events": batch}, timeout=10)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        if response.status_code == 200:
            return int(response.json()["accepted"])
        assert response.status_code == 503, response.text  # only "try again" during faults
        assert "Retry-After" in response.headers
        time.sleep(min(float(response.headers["Retry-After"]), 0.2))
    pytest.fail("ingest never acknowledged")


def _wait_applied(client: httpx.Client, users: list[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    for user in users:
        while True:
            body = client.get(f"/users/{user}", timeout=10).json()
            if body.get("pending") == 0 and body.get("history_length", 0) > 0:
                break
            assert time.monotonic() < deadline, f"{user} not applied: {body}"
            time.sleep(0.05)


def _check_exactly_once(
    url: str, checkpoint_dir: Path, sent: list[dict[str, Any]], cluster: bool = False
) -> None:
    """Each user's stored state covers its distinct events once and equals the batch factors."""
    by_user: dict[str, dict[str, dict[str, Any]]] = {}
    for e in sent:
        by_user.setdefault(e["user_id"], {})[e["event_id"]] = e
    raw: Any = (
        redis.RedisCluster.from_url("redis://" + url.split("://", 1)[1])
        if cluster
        else redis.Redis.from_url(url)
    )
    try:
        for user, distinct in by_user.items():
            blob = raw.get(f"solar:{{{user}}}:state")
            assert blob is not None, user
            state = LowRankState.from_bytes(blob)
            pos = raw.hgetall(f"solar:{{{user}}}:pos")
            assert state.n == len(distinct) == int(pos[b"seq"]) == int(pos[b"applied"]), user
            ref = reference_state(str(checkpoint_dir), list(distinct.values()))
            np.testing.assert_allclose(gram(state), gram(ref), rtol=1e-5, atol=1e-6)
    finally:
        raw.close()


def test_a_killed_applier_is_taken_over_and_nothing_applies_twice(
    checkpoint_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    env = _env(checkpoint_dir, redis_url, SOLAR_APPLIER="external")
    users = [f"k{i}" for i in range(150)]
    sent = _events(users, 80, seed=1)
    serve = Serve(env, tmp_path / "serve.log")
    raw = redis.Redis.from_url(redis_url)
    try:
        with httpx.Client(base_url=serve.base) as client:
            acked = sum(
                _post_until_acknowledged(client, sent[i : i + 400])
                for i in range(0, len(sent), 400)
            )
            assert acked == len(sent)
            first = Worker(env, tmp_path / "worker1.log")

            def applied() -> int:
                return sum(int(raw.hget(f"solar:{{{u}}}:pos", "applied") or 0) for u in users)

            deadline = time.monotonic() + 60
            while applied() == 0:
                assert time.monotonic() < deadline, first.tail()
                time.sleep(0.005)
            first.kill()  # SIGKILL in the middle of its batches
            left = len(sent) - applied()
            assert left > 0, "the first applier finished before it could be killed"
            second = Worker(env, tmp_path / "worker2.log")
            try:
                _wait_applied(client, users)
            finally:
                second.stop()
        _check_exactly_once(redis_url, checkpoint_dir, sent)
    finally:
        raw.close()
        serve.stop()


def test_redis_killed_and_restarted_under_load_loses_and_doubles_nothing(
    checkpoint_dir: Path, tmp_path: Path
) -> None:
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    server = RedisServer(tmp_path / "redis", extra_args=aof)
    (tmp_path / "redis").mkdir()
    server.start()
    serve: Serve | None = None
    try:
        serve = Serve(_env(checkpoint_dir, server.url), tmp_path / "serve.log")
        users = [f"r{i}" for i in range(20)]
        sent = _events(users, 60, seed=2)
        statuses: list[int] = []

        async def load() -> None:
            async with httpx.AsyncClient(base_url=serve.base, timeout=10) as client:

                async def ingest_all() -> None:
                    for i in range(0, len(sent), 30):
                        await asyncio.to_thread(_post_until_acknowledged, sync, sent[i : i + 30])
                        await asyncio.sleep(0.02)

                async def rank_loop(stop: asyncio.Event) -> None:
                    while not stop.is_set():
                        body = {"user_id": random.choice(users), "candidates": [1, 2, 3]}
                        try:
                            response = await client.post("/rank", json=body)
                        except httpx.TransportError:
                            continue
                        statuses.append(response.status_code)
                        if response.status_code == 503:
                            assert "Retry-After" in response.headers
                        await asyncio.sleep(0.01)

                stop = asyncio.Event()
                ranker = asyncio.create_task(rank_loop(stop))
                await asyncio.sleep(0.3)
                writer = asyncio.create_task(ingest_all())
                await asyncio.sleep(0.5)
                server.kill()  # mid-load: a crash, AOF on disk
                await asyncio.sleep(1.5)
                server.start()  # same port, same AOF: nothing acknowledged may be lost
                await writer
                stop.set()
                await ranker

        with httpx.Client(base_url=serve.base) as sync:
            asyncio.run(load())
            assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
            _wait_applied(sync, users)
        _check_exactly_once(server.url, checkpoint_dir, sent)
    finally:
        if serve is not None:
            serve.stop()
        server.stop()


def test_two_serves_and_two_workers_on_hot_users(
    checkpoint_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    env = _env(checkpoint_dir, redis_url, SOLAR_APPLIER="external")
    users = [f"hot{i}" for i in range(4)]
    sent = _events(users, 150, seed=3)
    serves = [Serve(env, tmp_path / f"serve{i}.log") for i in range(2)]
    workers = [Worker(env, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        start = time.monotonic()
        batches = [sent[i : i + 10] for i in range(0, len(sent), 10)]
        clients = [httpx.Client(base_url=s.base) for s in serves]
        try:

            async def post_all() -> list[int]:
                async def one(i: int, batch: list[dict[str, Any]]) -> int:
                    return await asyncio.to_thread(
                        _post_until_acknowledged, clients[i % 2], batch + batch[:2]
                    )

                return await asyncio.gather(*(one(i, b) for i, b in enumerate(batches)))

            accepted = asyncio.run(post_all())
            assert sum(accepted) == len(sent)  # the repeated two of each batch: duplicates
            _wait_applied(clients[0], users)
        finally:
            for client in clients:
                client.close()
        seconds = time.monotonic() - start
        conflicts = sum(w.metric("solar_store_conflicts_total") for w in workers)
        print(f"\nhot users: {conflicts:g} lost commits in {seconds:.1f} s "
              f"({conflicts / seconds:.2f}/s) over {len(sent)} events")  # fmt: skip
        assert conflicts <= 2  # one writer per partition: at most a take-over race
        _check_exactly_once(redis_url, checkpoint_dir, sent)
    finally:
        for process in [*workers, *serves]:
            process.stop()


def test_end_to_end_on_a_redis_cluster(
    checkpoint_dir: Path, cluster_url: str, tmp_path: Path
) -> None:
    env = _env(checkpoint_dir, cluster_url, SOLAR_APPLIER="external")
    serve = Serve(env, tmp_path / "serve.log")
    worker = Worker(env, tmp_path / "worker.log")
    users = [f"c{i}" for i in range(12)]
    sent = _events(users, 20, seed=4)
    try:
        with httpx.Client(base_url=serve.base, timeout=30) as client:
            response = client.post("/ingest?wait=true", json={"events": sent})
            assert response.status_code == 200, response.text
            assert response.json()["accepted"] == len(sent)
            for user in users:
                body = client.get(f"/users/{user}").json()
                assert (body["history_length"], body["pending"]) == (20, 0)
            rank = client.post("/rank", json={"user_id": "c0", "candidates": [1, 2, 3]})
            assert rank.status_code == 200 and rank.json()["history_length"] == 20
            assert client.delete("/users/c1").json()["deleted"] is True
            assert client.get("/users/c1").status_code == 404
        _check_exactly_once(
            cluster_url, checkpoint_dir, [e for e in sent if e["user_id"] != "c1"], cluster=True
        )
    finally:
        worker.stop()
        serve.stop()
