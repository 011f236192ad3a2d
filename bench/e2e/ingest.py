"""Ingest benchmark (docs/DESIGN.md §10): events/s acknowledged per serve process and applied
per worker, over HTTP, on a private Redis and a private PostgreSQL history (fsync on);
optionally against a base revision in the same run.

    .venv/bin/python -m bench.e2e.ingest                          # this checkout only
    .venv/bin/python -m bench.e2e.ingest --base main --rounds 2   # A/B, sides alternating

Per side and round, on a flushed Redis and a fresh history schema:

1. Acknowledged: one `solar serve` with ``SOLAR_APPLIER=external`` (it only stores), and
   ``--clients`` concurrent clients posting 1,000-event bodies (pre-encoded, so the client
   spends little CPU) over ``--users`` users for ``--seconds``: acknowledged events/s.
2. Applied: then one `solar worker` (started and ready before the clock starts) drains that
   backlog: applied events/s, read from the users' positions in Redis.
3. ``--lag-seconds S`` (this checkout only, 0: skipped): serve and worker under a paced load
   (``--rate`` events/s in requests of 1–50 events over 2,000 Zipf users); p50/p99 of
   ``solar_apply_lag_seconds`` from the worker's /metrics (bucket upper bounds).

The base revision is exported with ``git archive`` (``bench.e2e.ab.export``) and run with
the same interpreter and environment; it must share this checkout's Redis layout (a commit
at or after the data layer, 2a680b0). The clients run on the same cores as the servers: the
figures are what this machine sustains, compare them only within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import redis

from bench.common import harness
from bench.common.load import server_cpu_s
from bench.e2e.ab import export

logger = logging.getLogger("bench.e2e.ingest")
BODY_EVENTS = 1_000
FIGURES = (
    "acknowledged/s",
    "serve CPU µs/event",
    "Redis CPU µs/event",
    "applied/s",
    "worker CPU µs/event",
)


def _bodies(users: list[str], count: int, seed: int) -> list[bytes]:
    """``count`` JSON bodies of ``BODY_EVENTS`` events over ``users``, no event twice."""
    rng = random.Random(seed)
    bodies = []
    for b in range(count):
        ts0 = 1.7e9 + (seed * 10_000 + b) * BODY_EVENTS
        events = [
            {"user_id": rng.choice(users), "item_id": rng.randrange(1, 1_000), "ts": ts0 + i}
            for i in range(BODY_EVENTS)
        ]
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


async def _blast(base: str, bodies: list[list[bytes]], seconds: float) -> tuple[int, float, float]:
    """(events acknowledged, seconds taken, the serve's CPU seconds): each client posts its
    bodies until the time is up or its bodies run out."""
    deadline = time.monotonic() + seconds
    acked = 0

    async def client_loop(own: list[bytes]) -> None:
        nonlocal acked
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            for body in own:
                if time.monotonic() >= deadline:
                    return
                response = await client.post("/ingest", content=body, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"/ingest {response.status_code}: {response.text}")
                acked += response.json()["accepted"]

    async with httpx.AsyncClient(base_url=base, timeout=60) as probe:
        cpu_s = await server_cpu_s(probe)
        start = time.monotonic()
        await asyncio.gather(*(client_loop(own) for own in bodies))
        took_s = time.monotonic() - start
        return acked, took_s, await server_cpu_s(probe) - cpu_s


def _redis_cpu_s(raw: redis.Redis) -> float:
    """CPU seconds the Redis server has used (user + system)."""
    info = raw.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _cpu_s(metrics_url: str) -> float:
    """``process_cpu_seconds_total`` on a /metrics page."""
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith("process_cpu_seconds_total "):
            return float(line.split()[1])
    return float("nan")


def _applied(url: str, users: list[str]) -> int:
    """Events applied over ``users``, read from Redis in one pipeline (polling the service
    instead would take CPU from the worker being measured)."""
    with redis.Redis.from_url(url) as raw:
        pipe = raw.pipeline(transaction=False)
        for u in users:
            pipe.hget(f"solar:{{{u}}}:pos", "applied")
        return sum(int(applied or 0) for applied in pipe.execute())


def one_side(
    tree: Path,
    model: Path,
    redis_url: str,
    env: dict[str, str],
    bodies: list[list[bytes]],
    users: list[str],
    seconds: float,
) -> dict[str, float]:
    """Acknowledged and applied events/s of ``tree`` on a flushed Redis, and the serve's and
    the worker's CPU µs per event (what an event costs whatever else runs on the machine)."""
    with redis.Redis.from_url(redis_url) as raw:
        raw.flushall()
        with harness.service(model, redis_url, env=env, tree=tree) as base:
            redis_cpu_s = _redis_cpu_s(raw)
            acked, took_s, serve_cpu_s = asyncio.run(_blast(base, bodies, seconds))
            redis_cpu_s = _redis_cpu_s(raw) - redis_cpu_s
    with harness.worker(model, redis_url, env=env, tree=tree) as metrics_url:
        cpu_s = _cpu_s(metrics_url)
        start = time.monotonic()
        while _applied(redis_url, users) < acked:
            if time.monotonic() - start > 600:
                raise RuntimeError("the worker did not drain the backlog in 600 s")
            time.sleep(0.05)
        apply_s = time.monotonic() - start
        worker_cpu_s = _cpu_s(metrics_url) - cpu_s
    return {
        "acknowledged/s": acked / took_s,
        "serve CPU µs/event": 1e6 * serve_cpu_s / acked,
        "Redis CPU µs/event": 1e6 * redis_cpu_s / acked,
        "applied/s": acked / apply_s,
        "worker CPU µs/event": 1e6 * worker_cpu_s / acked,
    }


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


def _buckets(metrics_url: str, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a histogram on a /metrics page."""
    text = httpx.get(metrics_url, timeout=5).text
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


def apply_lag(
    model: Path, redis_url: str, env: dict[str, str], rate: float, seconds: float
) -> tuple[float, float]:
    """p50 and p99 apply lag (bucket bounds, seconds) of this checkout at ``rate`` events/s."""
    with redis.Redis.from_url(redis_url) as raw:
        raw.flushall()
    with (
        harness.service(model, redis_url, env=env) as base,
        harness.worker(model, redis_url, env=env) as metrics_url,
    ):
        before = _buckets(metrics_url, "solar_apply_lag_seconds")
        asyncio.run(_paced(base, rate, seconds))
        time.sleep(1.0)
        after = _buckets(metrics_url, "solar_apply_lag_seconds")
    return _quantile(before, after, 0.5), _quantile(before, after, 0.99)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default=None, help="git revision to compare against (same run)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--lag-seconds", type=float, default=0.0)
    p.add_argument("--rate", type=float, default=2_000.0, help="paced events/s (lag)")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    load = os.getloadavg()
    users = [f"b{i}" for i in range(args.users)]
    # enough bodies for 40,000 events/s per side; each client posts its own
    per_client = max(1, int(40 * args.seconds / args.clients) + 1)
    bodies = [_bodies(users, per_client, c) for c in range(args.clients)]
    results: dict[str, list[dict[str, float]]] = {"this": []}
    lag: tuple[float, float] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="solar-bench-ingest-") as tmp,
        harness.redis_server() as redis_url,
        harness.postgres_history() as pg_url,
    ):
        trees = {"this": harness.REPO}
        if args.base:
            trees["base"] = export(args.base, Path(tmp) / "base")
            results["base"] = []
        model = harness.random_checkpoint(Path(tmp) / "model")
        env = {
            "SOLAR_HISTORY_URL": pg_url,
            "SOLAR_APPLIER": "external",
            "SOLAR_HALF_LIFE_S": "0",
        }
        sides = list(trees)
        for r in range(args.rounds):
            for side in sides if r % 2 else reversed(sides):
                side_env = {**env, "SOLAR_HISTORY_SCHEMA": f"bench_{side}_{r}"}
                figures = one_side(
                    trees[side], model, redis_url, side_env, bodies, users, args.seconds
                )
                logger.info("round %d %s: %s", r, side, figures)
                results[side].append(figures)
        if args.lag_seconds > 0:
            lag = apply_lag(
                model,
                redis_url,
                {**env, "SOLAR_HISTORY_SCHEMA": "lag"},
                args.rate,
                args.lag_seconds,
            )
    command = shlex.join([".venv/bin/python", "-m", "bench.e2e.ingest", *raw])
    print(markdown(results, args, command, load, os.getloadavg(), lag))
    return 0


def markdown(
    results: dict[str, list[dict[str, float]]],
    args: argparse.Namespace,
    command: str,
    load: tuple[float, float, float],
    load_after: tuple[float, float, float],
    lag: tuple[float, float] | None,
) -> str:
    lines = [
        f"Command: `{command}` ({os.cpu_count()} CPUs, load average {load[0]:.1f} → "
        f"{load_after[0]:.1f}). One serve (`SOLAR_APPLIER=external`), {args.clients} clients × "
        f"1,000-event bodies over {args.users} users for {args.seconds:g} s, then one worker "
        "drains the backlog; private Redis and PostgreSQL (fsync on). CPU µs/event: the "
        "process's CPU time over the events (1e6 / it = events/s one fully used core "
        "sustains). Each cell: the rounds' values (median first).",
        "",
        "| side | " + " | ".join(FIGURES) + " |",
        "|" + " --- |" * (len(FIGURES) + 1),
    ]
    labels = {"base": f"`{args.base}`", "this": "this checkout"}
    for side in ("base", "this"):
        if side not in results:
            continue
        cells = []
        for figure in FIGURES:
            values = [r[figure] for r in results[side]]
            cells.append(
                f"{statistics.median(values):,.0f} (" + ", ".join(f"{v:,.0f}" for v in values) + ")"
            )
        lines.append(f"| {labels[side]} | " + " | ".join(cells) + " |")
    if lag is not None:
        lines += [
            "",
            f"Apply lag at {args.rate:,.0f} events/s paced ({args.lag_seconds:g} s, 1–50 events "
            f"per request, 2,000 Zipf users): p50 ≤ {lag[0] * 1e3:g} ms, "
            f"p99 ≤ {lag[1] * 1e3:g} ms (bucket bounds).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
