"""Ingest benchmark (docs/DESIGN.md §10): events/s acknowledged per serve process, applied per
worker, apply lag, and Redis memory per user, on a private Redis on this machine.

    .venv/bin/python -m bench.e2e.ingest              # prints a Markdown summary
    .venv/bin/python -m bench.e2e.ingest --seconds 5  # shorter phases

1. Acknowledged: one `solar serve` with ``SOLAR_APPLIER=external`` (it only appends), and
   ``--clients`` concurrent clients posting 1,000-event bodies over ``--users`` users for
   ``--seconds``: acknowledged events/s of the one serve process.
2. Applied: then one `solar worker` drains that backlog: applied events/s of one worker.
3. Lag: the serve process and the worker under a steady paced load (``--rate`` events/s in
   requests of 1–50 events over 2,000 Zipf users); p50/p99 of ``solar_apply_lag_seconds``
   from the worker's /metrics (bucket upper bounds).
4. Memory: ``MEMORY USAGE`` of one user's keys after 10,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common.harness import random_checkpoint
from solar_tools.processes import Serve, Worker
from solar_tools.redis_server import RedisServer


def _events(rng: random.Random, users: list[str], n: int, ts0: float) -> list[dict[str, Any]]:
    return [
        {"user_id": rng.choice(users), "item_id": rng.randrange(1, 1_000), "ts": ts0 + i}
        for i in range(n)
    ]


async def _blast(base: str, users: list[str], seconds: float, clients: int) -> int:
    rng = random.Random(0)
    deadline = time.monotonic() + seconds
    acked = 0

    async def client_loop(c: int) -> None:
        nonlocal acked
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            ts = 1.7e9 + c * 1e7
            while time.monotonic() < deadline:
                body = {"events": _events(rng, users, 1_000, ts)}
                ts += 1_000
                response = await client.post("/ingest", json=body)
                assert response.status_code == 200, response.text
                acked += response.json()["accepted"]

    await asyncio.gather(*(client_loop(c) for c in range(clients)))
    return acked


async def _paced(base: str, rate: float, seconds: float) -> None:
    rng = random.Random(1)
    users = [f"z{i}" for i in range(2_000)]
    weights = [1.0 / (i + 1) for i in range(len(users))]
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        start = time.monotonic()
        sent = 0
        ts = 1.8e9
        while time.monotonic() - start < seconds:
            n = rng.randint(1, 50)
            user = rng.choices(users, weights)[0]
            events = [
                {"user_id": user, "item_id": rng.randrange(1, 1_000), "ts": ts + j}
                for j in range(n)
            ]
            ts += n
            await client.post("/ingest", json={"events": events})
            sent += n
            ahead_s = sent / rate - (time.monotonic() - start)
            if ahead_s > 0:
                await asyncio.sleep(ahead_s)


def _buckets(worker: Worker, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a histogram on the worker's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5).text
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    return buckets


def _quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """The q-quantile's bucket bound of what was observed between the two scrapes."""
    delta = [(b, a - (before[i][1] if before else 0.0)) for i, (b, a) in enumerate(after)]
    total = delta[-1][1]
    for bound, count in delta:
        if count >= q * total:
            return bound
    return float("inf")


def _pending(url: str, users: list[str]) -> int:
    """Events acknowledged and not applied, read from Redis in one pipeline (polling the
    service instead would take CPU from the worker being measured)."""
    import redis

    with redis.Redis.from_url(url) as raw:
        pipe = raw.pipeline(transaction=False)
        for u in users:
            pipe.hmget(f"solar:{{{u}}}:pos", ["seq", "applied"])
        return sum(int(seq or 0) - int(applied or 0) for seq, applied in pipe.execute())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2_000.0, help="paced events/s (lag)")
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="solar-bench-ingest-"))
    (work / "redis").mkdir()
    server = RedisServer(work / "redis")
    server.start()
    model = random_checkpoint(work / "model")
    env = {
        "SOLAR_MODEL_PATH": str(model),
        "SOLAR_REDIS_URL": server.url,
        "SOLAR_APPLIER": "external",
        "SOLAR_HALF_LIFE_S": "0",
    }
    users = [f"b{i}" for i in range(args.users)]
    serve = Serve(env, work / "serve.log")
    worker: Worker | None = None
    try:
        start = time.monotonic()
        acked = asyncio.run(_blast(serve.base, users, args.seconds, args.clients))
        ack_rate = acked / (time.monotonic() - start)
        worker = Worker(env, work / "worker.log")
        start = time.monotonic()
        while _pending(server.url, users) > 0:
            time.sleep(0.1)
        apply_rate = acked / (time.monotonic() - start)
        before = _buckets(worker, "solar_apply_lag_seconds")
        asyncio.run(_paced(serve.base, args.rate, args.seconds))
        time.sleep(1.0)
        after = _buckets(worker, "solar_apply_lag_seconds")
        p50 = _quantile(before, after, 0.5)
        p99 = _quantile(before, after, 0.99)
        import redis

        raw = redis.Redis.from_url(server.url)
        one = [f"m{i}" for i in range(1)]
        with httpx.Client(base_url=serve.base, timeout=60) as client:
            for i in range(0, 10_000, 1_000):
                events = [
                    {
                        "user_id": one[0],
                        "item_id": j % 997 + 1,
                        "ts": 1e9 + i + j,
                        "event_id": f"e{i + j}",
                    }
                    for j in range(1_000)
                ]
                client.post("/ingest?wait=true", json={"events": events})
        memory = {
            k.split(":")[-1]: raw.memory_usage(f"solar:{{m0}}:{k.split(':')[-1]}")
            for k in ("state", "log", "pos", "dedup")
        }
        raw.close()
    finally:
        if worker is not None:
            worker.stop()
        serve.stop()
        server.stop()
    print("| figure | value | target |")
    print("| --- | --- | --- |")
    print(
        f"| acknowledged events/s, one serve process ({args.clients} clients, "
        f"1,000-event bodies, {args.users} users) | {ack_rate:,.0f} | ≥ 20,000 |"
    )
    print(
        f"| applied events/s, one worker (draining that backlog) | {apply_rate:,.0f} | ≥ 20,000 |"
    )
    print(
        f"| apply lag p50 / p99 at {args.rate:,.0f} events/s paced (bucket bounds) | "
        f"≤ {p50 * 1e3:g} ms / ≤ {p99 * 1e3:g} ms | p99 ≤ 100 ms |"
    )
    print(
        "| Redis bytes per user at 10,000 events (MEMORY USAGE) | "
        + ", ".join(f"{k} {v:,}" for k, v in memory.items())
        + " | |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
