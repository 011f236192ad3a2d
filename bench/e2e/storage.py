"""Storage benchmark (issue: the data layer): Redis bytes per user and ingest throughput of
the hot tier + durable tier path, on a private redis-server and a private PostgreSQL.

    .venv/bin/python -m bench.e2e.storage                    # Markdown summary
    .venv/bin/python -m bench.e2e.storage --sizes 100 1000    # fewer history lengths

1. Bytes per user: one user per history length N (100, 1 k, 10 k, 100 k events with event
   ids, ingested in 500-event bodies through ``Ingestor`` as /ingest does, every event applied
   after each body as the applier does), then ``MEMORY USAGE key SAMPLES 0`` summed over all of
   the user's keys, and the durable tier's table size per event (``pg_total_relation_size``).
2. Throughput, in-process (no HTTP): ``--users`` users, ``--body`` events per ingest call
   spread over them, for ``--seconds``: events/s acknowledged (the /ingest path: mark, Redis
   append, one batched durable write, mark durable + announce), then events/s applied by one
   ``Applier`` draining what was acknowledged.
3. ``--http-seconds S`` (0: skipped): one ``solar serve`` (``SOLAR_APPLIER=external``, the
   PostgreSQL history) and 4 concurrent clients posting 1,000-event bodies over 200 users
   for S seconds, as ``bench/ingest.py``'s first phase does: acknowledged events/s of one
   serve process over HTTP.

The machine is shared: both phases run in the same process, one after the other; compare
figures only within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import httpx

from bench.common.harness import random_checkpoint
from bench.e2e.history import relation_bytes
from service.core.applier import Applier
from service.core.ingest import EventColumns, Ingestor
from service.core.serving_model import ServingModel, load_serving_model
from service.core.users import UserStates
from service.history.postgres import PostgresHistory
from service.metrics import Metrics
from service.settings import Settings
from service.store.keys import user_keys
from service.store.redis_client import RedisClient, connect_redis
from service.store.redis_store import RedisStore
from service.stream.redis_stream import RedisStream
from solar_tools.postgres_server import PostgresServer
from solar_tools.processes import Serve
from solar_tools.redis_server import RedisServer

DEDUP_WINDOW = 4_000
BODY = 500


class Tiers(NamedTuple):
    client: RedisClient
    store: RedisStore
    stream: RedisStream
    history: PostgresHistory
    model: ServingModel
    metrics: Metrics


def _columns(user: str, start: int, n: int, rng: random.Random) -> EventColumns:
    return EventColumns(
        user_ids=[user] * n,
        ts=[1_700_000_000.0 + start + i for i in range(n)],
        items=[rng.randint(1, 1_682) for _ in range(n)],
        actions=[rng.choice([None, "click"]) for _ in range(n)],
        event_ids=[f"{user}-{start + i}" for i in range(n)],
    )


def _ingestor(t: Tiers) -> Ingestor:
    return Ingestor(t.store, t.stream, t.metrics, t.history, DEDUP_WINDOW, t.model.version)


def _users(t: Tiers) -> UserStates:
    return UserStates(t.store, t.model, t.metrics, history=t.history, dedup_window=DEDUP_WINDOW)


async def user_bytes(t: Tiers, n: int) -> dict[str, int]:
    """MEMORY USAGE of each key of one user with an n-event history, all applied."""
    user, rng = f"size{n}", random.Random(n)
    ingestor, users = _ingestor(t), _users(t)
    for start in range(0, n, BODY):
        await ingestor.ingest(_columns(user, start, min(BODY, n - start), rng))
        await users.apply_pending(user)
    keys = user_keys(user)
    named = {"state": keys.state(t.model.version), "log": keys.log, "pos": keys.pos}
    sizes = {}
    for name, key in {**named, "dedup": keys.dedup}.items():
        usage = await t.client.memory_usage(key, samples=0)
        sizes[name] = int(usage or 0)
    return sizes


async def throughput(t: Tiers, n_users: int, body: int, seconds: float) -> tuple[float, float]:
    """(acknowledged events/s, applied events/s) of the in-process path: each ingest call is
    followed by one applier pass over its notices (blocks of body / users events, as an
    applier that keeps up sees them); the two are timed apart."""
    rng = random.Random(0)
    ingestor = _ingestor(t)
    applier = Applier(_users(t), t.stream, t.metrics)
    users = [f"tp{i}" for i in range(n_users)]
    sent, ingest_s, apply_s, calls = 0, 0.0, 0.0, 0
    while ingest_s + apply_s < seconds:
        per_user = body // n_users
        cols = [_columns(u, calls * per_user, per_user, rng) for u in users]
        merged = EventColumns(
            *(sum((list(getattr(c, f)) for c in cols), []) for f in EventColumns._fields)
        )
        start = time.perf_counter()
        sent += (await ingestor.ingest(merged)).accepted
        ingest_s += time.perf_counter() - start
        start = time.perf_counter()
        for k in range(t.stream.partitions):
            while await t.stream.backlog(k):
                notices = await t.stream.read(k, applier.consumer, 512, block_s=0.001)
                await applier.apply(k, notices)
        apply_s += time.perf_counter() - start
        calls += 1
    applied = sum([(await t.store.position(u, t.model.version)).applied for u in users])
    return sent / ingest_s, applied / apply_s


def http_acknowledged(model_path: Path, redis_url: str, pg_url: str, seconds: float) -> float:
    """Events/s acknowledged by one ``solar serve`` over HTTP (see the module docstring)."""
    env = {
        **os.environ,
        "SOLAR_MODEL_PATH": str(model_path),
        "SOLAR_REDIS_URL": redis_url,
        "SOLAR_HISTORY_URL": pg_url,
        "SOLAR_HISTORY_SCHEMA": "http",
        "SOLAR_APPLIER": "external",
        "SOLAR_HALF_LIFE_S": "0",
    }
    serve = Serve(env, model_path.parent / "serve.log")
    users = [f"h{i}" for i in range(200)]
    try:

        async def blast() -> int:
            rng, deadline, acked = random.Random(0), time.monotonic() + seconds, 0

            async def client_loop(c: int) -> None:
                nonlocal acked
                async with httpx.AsyncClient(base_url=serve.base, timeout=30) as client:
                    ts = 1.7e9 + c * 1e7
                    while time.monotonic() < deadline:
                        events = [
                            {
                                "user_id": rng.choice(users),
                                "item_id": rng.randrange(1, 1_000),
                                "ts": ts + i,
                            }
                            for i in range(1_000)
                        ]
                        ts += 1_000
                        response = await client.post("/ingest", json={"events": events})
                        response.raise_for_status()
                        acked += response.json()["accepted"]

            start = time.monotonic()
            await asyncio.gather(*(client_loop(c) for c in range(4)))
            return int(acked / (time.monotonic() - start))

        return asyncio.run(blast())
    finally:
        serve.stop()


async def run(args: argparse.Namespace, redis_url: str, pg_url: str, workdir: Path) -> None:
    model_path = args.model
    model = load_serving_model(Settings(model_path=model_path))
    client = await connect_redis(redis_url)
    history = await PostgresHistory.open(pg_url)
    metrics = Metrics()
    t = Tiers(
        client,
        RedisStore(client, redis_url),
        RedisStream(client, redis_url, 16),
        history,
        model,
        metrics,
    )
    try:
        print(f"model {model.version} (d={model.dim}, r={model.rank}), dedup window {DEDUP_WINDOW}")
        print("\n| events | state B | dedup ring B | tail B | pos B | Redis total B |")
        print("|---:|---:|---:|---:|---:|---:|")
        for n in args.sizes:
            s = await user_bytes(t, n)
            total = sum(s.values())
            print(
                f"| {n:,} | {s['state']:,} | {s['dedup']:,} | {s['log']:,} | {s['pos']:,} "
                f"| {total:,} |"
            )
        rows = sum(args.sizes)
        as_appended = relation_bytes(pg_url, history.table_name)
        await asyncio.wait_for(history.compacted(), 120)
        compacted = relation_bytes(pg_url, history.table_name, vacuum_full=True)
        print(
            f"\ndurable tier (PostgreSQL table + TOAST + indexes) for {rows:,} events: "
            f"{as_appended / rows:.1f} B/event as appended (compactions in flight and their "
            f"dead rows included), {compacted / rows:.1f} B/event once the background "
            "compaction is done (VACUUM FULL)"
        )
        acked, applied = await throughput(t, args.users, args.body, args.seconds)
        print(
            f"\ningest, in-process, {args.users} users, {args.body}-event calls, "
            f"{args.seconds:g} s: {acked:,.0f} events/s acknowledged; "
            f"one applier drained them at {applied:,.0f} events/s"
        )
        rebuilds = {
            sample.labels["reason"]: int(sample.value)
            for sample in metrics.state_rebuilds.collect()[0].samples
            if sample.name.endswith("_total")
        }
        print(f"state rebuilds during the run, by reason: {rebuilds or 'none'}")
    finally:
        await history.close()
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e.storage", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--body", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: random)")
    parser.add_argument("--http-seconds", type=float, default=0.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        args.model = args.model or random_checkpoint(workdir / "model")
        (workdir / "redis").mkdir()
        redis = RedisServer(workdir / "redis")
        postgres = PostgresServer(fsync=True)
        redis.start()
        postgres.start()
        try:
            asyncio.run(run(args, redis.url, postgres.url(), workdir))
            if args.http_seconds > 0:
                rate = http_acknowledged(args.model, redis.url, postgres.url(), args.http_seconds)
                print(
                    f"\nover HTTP, one solar serve, 4 clients × 1,000-event bodies, 200 users, "
                    f"{args.http_seconds:g} s: {rate:,} events/s acknowledged"
                )
        finally:
            redis.stop()
            postgres.destroy()


if __name__ == "__main__":
    main()
