"""The eviction squeeze at the data-layer issue's size, on real processes: Redis at maxmemory
20 MB with the shipped policy (``noeviction``), `solar serve` + `solar worker`, a private
PostgreSQL history; U users × E events with event ids in 1,000-event bodies, then the same
events re-sent.

    .venv/bin/python -m bench.e2e.squeeze                       # 300 users × 400 events
    .venv/bin/python -m bench.e2e.squeeze --users 800           # more than 20 MB of users

The client retries each body until it is acknowledged (a 503 means "try again"); after
``--raise-after`` 503s the operator raises maxmemory to ``--raised`` (what a squeeze under
``noeviction`` asks of an operator), so the run ends. Printed figures, each with its target:

- events applied twice (a user's state counting more events than its distinct ones): 0;
- events lost (acknowledged, not in the user's state or not in the durable history): 0;
- answers of 500 to /ingest or /rank: 0;
- users still pending ``--pending-s`` seconds after the last acknowledgement: 0;
- and whether Redis reached maxmemory (peak ``used_memory``, 503s seen): a run that never
  filled Redis squeezed nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.common import harness
from model.states import LowRankState
from service.history.postgres import PostgresHistory
from service.store.eventlog import decode_log
from solar_tools.processes import Serve, Worker
from solar_tools.redis_server import RedisServer

logger = logging.getLogger("bench.e2e.squeeze")
BODY_EVENTS = 1_000


def _events(users: list[str], per_user: int, seed: int) -> list[dict[str, Any]]:
    """``per_user`` events of each user with event ids, increasing ts per user, shuffled."""
    rng = random.Random(seed)
    out = [
        {
            "user_id": u,
            "item_id": rng.randrange(1, 1_000),
            "ts": 1_700_000_000.0 + 30.0 * j + rng.random(),
            "action": rng.choice([None, "click"]),
            "event_id": f"{u}-{j}",
        }
        for u in users
        for j in range(per_user)
    ]
    rng.shuffle(out)
    return out


class Squeeze:
    """The client side: posts bodies until acknowledged, counting statuses."""

    def __init__(self, base: str, raw: redis.Redis, raise_after: int, raised: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=60)
        self.raw = raw
        self.raise_after = raise_after
        self.raised = raised
        self.statuses: dict[int, int] = {}
        self.memory_raised_at: float | None = None

    def _count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 503 and self.statuses[503] == self.raise_after:
            self.raw.config_set("maxmemory", self.raised)
            self.memory_raised_at = time.monotonic()
            logger.info("%d answers of 503: maxmemory raised to %s", self.raise_after, self.raised)

    def post(self, body: list[dict[str, Any]]) -> int:
        """Accepted events of ``body`` once acknowledged."""
        for _ in range(10_000):
            try:
                response = self.client.post("/ingest", json={"events": body})
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            self._count(response.status_code)
            if response.status_code == 200:
                return int(response.json()["accepted"])
            if response.status_code != 503:
                logger.error("/ingest %d: %s", response.status_code, response.text[:300])
            time.sleep(0.1)
        raise RuntimeError("a body was never acknowledged")

    def rank(self, user: str) -> None:
        response = self.client.post("/rank", json={"user_id": user, "candidates": [1, 2, 3]})
        self._count(response.status_code)


def _pending_users(raw: redis.Redis, users: list[str]) -> int:
    pipe = raw.pipeline(transaction=False)
    for u in users:
        pipe.hmget(f"solar:{{{u}}}:pos", ["seq", "applied"])
    return sum(1 for seq, applied in pipe.execute() if int(seq or 0) != int(applied or 0))


async def _history_counts(url: str, schema: str, users: list[str]) -> dict[str, tuple[int, int]]:
    """(events, distinct event-id digests) of each user in the durable history."""
    history = await PostgresHistory.open(url, schema=schema, compact_after=0)
    try:
        out = {}
        for u in users:
            records = decode_log((await history.read(u)).records)
            out[u] = (len(records), len({bytes(e) for e in records["event_id"]}))
        return out
    finally:
        await history.close()


def run(args: argparse.Namespace, workdir: Path, pg_url: str) -> dict[str, Any]:
    (workdir / "redis").mkdir()
    conf = ("--maxmemory", args.maxmemory, "--maxmemory-policy", "noeviction")
    server = RedisServer(workdir / "redis", extra_args=conf)
    server.start()
    model = harness.random_checkpoint(workdir / "model")
    env = {
        "SOLAR_MODEL_PATH": str(model),
        "SOLAR_REDIS_URL": server.url,
        "SOLAR_HISTORY_URL": pg_url,
        "SOLAR_HISTORY_SCHEMA": "squeeze",
        "SOLAR_HALF_LIFE_S": "0",
        "SOLAR_APPLIER": "external",
    }
    users = [f"s{i}" for i in range(args.users)]
    sent = _events(users, args.events, seed=19)
    bodies = [sent[i : i + BODY_EVENTS] for i in range(0, len(sent), BODY_EVENTS)]
    raw = redis.Redis.from_url(server.url)
    serve = Serve(env, workdir / "serve.log")
    worker = Worker(env, workdir / "worker.log")
    squeeze = Squeeze(serve.base, raw, args.raise_after, args.raised)
    try:
        start = time.monotonic()
        accepted = sum(squeeze.post(body) for body in bodies)
        resent = sum(squeeze.post(body) for body in bodies)
        acked_s = time.monotonic() - start
        acknowledged_at = time.monotonic()
        while _pending_users(raw, users) and time.monotonic() - acknowledged_at < args.pending_s:
            time.sleep(0.2)
        pending = _pending_users(raw, users)
        settled_s = time.monotonic() - acknowledged_at
        for u in users[:20]:
            squeeze.rank(u)
        peak = int(raw.info("memory")["used_memory_peak"])
        pipe = raw.pipeline(transaction=False)
        for u in users:
            pipe.get(f"solar:{{{u}}}:state")
        states = pipe.execute()
    finally:
        squeeze.client.close()
        worker.stop()
        serve.stop()
        raw.close()
        server.stop()
    stored = asyncio.run(_history_counts(pg_url, "squeeze", users))
    applied = {
        u: LowRankState.from_bytes(b).n if b else 0 for u, b in zip(users, states, strict=True)
    }
    per_user = args.events
    return {
        "events sent (distinct)": len(sent),
        "accepted, first pass": accepted,
        "accepted, re-sent pass": resent,
        "seconds to acknowledge both passes": acked_s,
        "applied twice": sum(max(0, n - per_user) for n in applied.values()),
        "lost from states": sum(max(0, per_user - n) for n in applied.values()),
        "lost from the durable history": sum(max(0, per_user - d) for _, d in stored.values()),
        "stored twice in the durable history": sum(n - d for n, d in stored.values()),
        "answers of 500": squeeze.statuses.get(500, 0),
        "answers by status": dict(sorted(squeeze.statuses.items())),
        f"users pending {args.pending_s:g} s after the last acknowledgement": pending,
        "seconds until none pending": settled_s if not pending else float("nan"),
        "Redis peak used_memory (bytes)": peak,
        "maxmemory reached (a 503 for OOM)": squeeze.statuses.get(503, 0) > 0,
    }


def _shown(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--events", type=int, default=400, help="events per user")
    p.add_argument("--maxmemory", default="20mb")
    p.add_argument("--raise-after", type=int, default=20, help="503s before maxmemory is raised")
    p.add_argument("--raised", default="256mb")
    p.add_argument("--pending-s", type=float, default=45.0)
    args = p.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    load = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="solar-squeeze-") as tmp,
        harness.postgres_history() as pg,
    ):
        figures = run(args, Path(tmp), pg)
    print(
        f"\nEviction squeeze: {args.users} users × {args.events} events (ids, "
        f"{BODY_EVENTS:,}-event bodies, then re-sent), Redis maxmemory {args.maxmemory} "
        f"noeviction, serve + worker + private PostgreSQL; load {load:.1f} → "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    print("| figure | value |\n| --- | --- |")
    for name, value in figures.items():
        shown = (
            f"{value:,.1f}"
            if isinstance(value, float)
            else f"{value:,}"
            if isinstance(value, int) and not isinstance(value, bool)
            else str(value)
        )
        print(f"| {name} | {shown} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
