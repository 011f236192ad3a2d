"""Model rollout, end to end, in one run (issue 20; docs/DESIGN.md §3, "Rollouts"):

    .venv/bin/python -m bench.e2e.rollout
    .venv/bin/python -m bench.e2e.rollout --users 60 --events 3000 --long 20000 --processes 2

A private Redis and PostgreSQL, two random default-shaped checkpoints A and B (seeds 0 and 1),
`solar worker` and `solar serve` on A (external applier). U users × N events and one user
with ``--long`` events are ingested through POST /ingest, then:

1. ``solar backfill --model B --processes P`` builds B's states (its events/s, per process);
2. a `solar serve` on B gets 20 /rank for the long user (the process's own first requests),
   then, per other user in turn, its first /rank on the new model and a second /rank of the
   user before it (warm), interleaved so that both meet the same moments of a shared machine:
   p50/p99 of each, M candidates, top_k 100, sequential, keep-alive; its read-path
   rebuilds (``solar_state_rebuilds_total{path="rank"}``) are counted;
3. closed-loop throughput (``--concurrency`` clients, ``--seconds`` each) with requests
   alternating between the A and B replicas (A+B), against two replicas of A (A+A), in
   alternating order over ``--rounds`` rounds; the rebuilds of every replica and the worker
   during those runs;
4. the long user's ``history_length`` on A and B against what was ingested (0 truncated).

Each pair first runs 3 s unmeasured (a replica's first concurrent passes); the backfill starts
once the sweep grace has passed since the seeding (a sweep applies every registered version
and would otherwise build part of B's states itself).

Writes section ``rollout`` of docs/BENCHMARKS.md. The load generator shares the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.common import harness
from bench.common.markdown import write_section

logger = logging.getLogger("bench.e2e.rollout")


def rebuilds(base: str, path: str | None = None) -> float:
    """``solar_state_rebuilds_total`` of a serve (its /metrics) or a worker (metrics URL)."""
    url = base if base.endswith("/metrics") else f"{base}/metrics"
    total = 0.0
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line.startswith("solar_state_rebuilds_total{") and (
            path is None or f'path="{path}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def first_and_warm_ms(
    base: str, users: Sequence[str], items: Sequence[str], m: int
) -> tuple[list[float], list[float]]:
    """Interleaved over one keep-alive connection: user i's first /rank, then a second /rank
    of user i − 1 (warm), so the two samples meet the same moments of a shared machine.
    (first, warm) latencies in ms."""
    rng = random.Random(0)
    first: list[float] = []
    warm: list[float] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for i, user in enumerate(users):
            for who, out in ((user, first), (users[i - 1], warm)):
                if out is warm and i == 0:
                    continue
                body = {"user_id": who, "candidates": rng.sample(list(items), m), "top_k": 100}
                start = time.perf_counter()
                response = client.post("/rank", json=body)
                out.append((time.perf_counter() - start) * 1_000)
                assert response.status_code == 200, response.text
    return first, warm


def sequential_ms(base: str, users: Sequence[str], items: Sequence[str], m: int) -> list[float]:
    """One /rank per user, in order, over one keep-alive connection: the latencies (ms)."""
    rng = random.Random(0)
    out = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for user in users:
            body = {"user_id": user, "candidates": rng.sample(list(items), m), "top_k": 100}
            start = time.perf_counter()
            response = client.post("/rank", json=body)
            out.append((time.perf_counter() - start) * 1_000)
            assert response.status_code == 200, response.text
    return out


async def _alternating(
    bases: Sequence[str],
    users: Sequence[str],
    items: Sequence[str],
    m: int,
    clients: int,
    seconds: float,
) -> int:
    """Closed loop: ``clients`` clients, each request to the next replica in turn; requests
    completed within ``seconds``."""
    rng = random.Random(1)
    bodies = [
        {"user_id": rng.choice(list(users)), "candidates": rng.sample(list(items), m), "top_k": 100}
        for _ in range(64)
    ]
    done = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients * len(bases))
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def loop(k: int) -> None:
            nonlocal done
            i = k
            while time.monotonic() < deadline:
                response = await client.post(f"{bases[i % len(bases)]}/rank", json=bodies[i % 64])
                assert response.status_code == 200, response.text
                done += 1
                i += 1

        await asyncio.gather(*(loop(k) for k in range(clients)))
    return done


def throughput(
    bases: Sequence[str], users: Sequence[str], items: Sequence[str], args: argparse.Namespace
) -> float:
    done = asyncio.run(_alternating(bases, users, items, args.m, args.concurrency, args.seconds))
    return done / args.seconds


def backfill(env: dict[str, str], model: Path, processes: int, rate: float) -> tuple[float, str]:
    """Run ``solar backfill`` to completion: (wall seconds, its summary line)."""
    command = [sys.executable, "-m", "service.cli", "backfill", "--model", str(model)]
    command += ["--processes", str(processes), "--max-events-per-s", str(rate)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"solar backfill failed ({done.returncode}):\n{done.stderr[-4000:]}")
    summary = [line for line in done.stderr.splitlines() if " complete: " in line]
    return seconds, summary[-1] if summary else ""


def history_length(base: str, user: str) -> int:
    return int(httpx.get(f"{base}/users/{user}", timeout=10).json()["history_length"])


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=150)
    p.add_argument("--events", type=int, default=3_000)
    p.add_argument("--long", type=int, default=20_000, help="events of the one long user")
    p.add_argument("--m", type=int, default=2_048)
    p.add_argument("--processes", type=int, default=1, help="solar backfill --processes")
    p.add_argument("--rate", type=float, default=1e9, help="backfill --max-events-per-s")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=6, help="A+B / A+A pairs, order alternating")
    p.add_argument("--markdown", type=Path, default=Path("docs/BENCHMARKS.md"))
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    load_before = os.getloadavg()
    users = [f"ro{u}" for u in range(args.users)]
    with tempfile.TemporaryDirectory(prefix="solar-rollout-") as tmp:
        model_a = harness.random_checkpoint(Path(tmp) / "a", n_items=10_000, seed=0)
        model_b = harness.random_checkpoint(Path(tmp) / "b", n_items=10_000, seed=1)
        items = harness.vocabulary(model_a)
        with harness.redis_server() as redis_url, harness.postgres_history() as pg_url:
            env = {
                "SOLAR_HISTORY_URL": pg_url,
                "SOLAR_APPLIER": "external",
                "SOLAR_APPLY_LEASE_S": "2",
            }
            full_env = {**os.environ, **env, "SOLAR_REDIS_URL": redis_url}
            with (
                harness.worker(model_a, redis_url, env=env) as worker_url,
                harness.service(model_a, redis_url, env=env) as serve_a,
            ):
                seeded = harness.seed_users(serve_a, users, args.events, items, concurrency=2)
                harness.seed_users(serve_a, ["long"], args.long, items, concurrency=1)
                logger.info("seeded %d events at %.0f events/s", seeded.events, seeded.events_per_s)
                deadline = time.monotonic() + 600
                while any(
                    httpx.get(f"{serve_a}/users/{u}", timeout=10).json()["pending"]
                    for u in [*users, "long"]
                ):
                    assert time.monotonic() < deadline, "the worker did not keep up"
                    time.sleep(0.5)
                # Past the sweep grace (5 s): a sweep applies every registered version, so one
                # running during the backfill would build B's states in its place.
                time.sleep(7.0)
                backfill_s, summary = backfill(full_env, model_b, args.processes, args.rate)
                events = args.users * args.events + args.long
                logger.info("backfill: %.1f s; %s", backfill_s, summary)
                with harness.service(model_b, redis_url, env=env) as serve_b:
                    # The process's own first requests (connections, first allocations) are
                    # not what a rollout changes: they go to the long user, outside the pass.
                    sequential_ms(serve_b, ["long"] * 20, items, args.m)
                    first, warm = first_and_warm_ms(serve_b, users, items, args.m)
                    first_rebuilds = rebuilds(serve_b, "rank")
                    lengths = {
                        "A": history_length(serve_a, "long"),
                        "B": history_length(serve_b, "long"),
                    }
                    with harness.service(model_a, redis_url, env=env) as serve_a2:
                        for bases in ((serve_a, serve_b), (serve_a, serve_a2)):  # not measured
                            asyncio.run(
                                _alternating(bases, users, items, args.m, args.concurrency, 3.0)
                            )
                        before = sum(rebuilds(u) for u in (serve_a, serve_b, serve_a2, worker_url))
                        rates: dict[str, list[float]] = {"A+B": [], "A+A": []}
                        for r in range(args.rounds):
                            order = ("A+B", "A+A") if r % 2 == 0 else ("A+A", "A+B")
                            for pair in order:
                                bases = (serve_a, serve_b) if pair == "A+B" else (serve_a, serve_a2)
                                rates[pair].append(throughput(bases, users, items, args))
                                logger.info("round %d %s: %.1f req/s", r, pair, rates[pair][-1])
                        after = sum(rebuilds(u) for u in (serve_a, serve_b, serve_a2, worker_url))
    load_after = os.getloadavg()
    figures: dict[str, Any] = {
        "first_p50": harness.percentile(first, 50),
        "first_p99": harness.percentile(first, 99),
        "warm_p50": harness.percentile(warm, 50),
        "warm_p99": harness.percentile(warm, 99),
        "first_rebuilds": first_rebuilds,
        "ab": sum(rates["A+B"]) / len(rates["A+B"]),
        "aa": sum(rates["A+A"]) / len(rates["A+A"]),
        "pairs": rates,
        "alternating_rebuilds": after - before,
        "backfill_s": backfill_s,
        "events": events,
    }
    text = markdown(figures, lengths, args, summary, load_before, load_after, raw)
    print(text)
    write_section(args.markdown, "rollout", text)
    return 0


def markdown(
    f: dict[str, Any],
    lengths: dict[str, int],
    args: argparse.Namespace,
    summary: str,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    raw: list[str],
) -> str:
    ratio_first = f["first_p99"] / f["warm_p99"]
    ratio_tp = f["ab"] / f["aa"]
    rate = f["events"] / f["backfill_s"]
    own = re.search(r"complete: (\d+) users, (\d+) events in ([\d.]+) s", summary)
    expected_long = args.long
    truncated = sum(1 for n in lengths.values() if n != expected_long)
    per_process = re.search(r"\((\d+) events/s, (\d+) per process\)", summary)
    reported = ""
    if own and per_process:
        reported = (
            f"by its own clock (listing and building): {int(own.group(1)):,} users, "
            f"{int(own.group(2)):,} events in {own.group(3)} s = "
            f"**{int(per_process.group(2)):,} events/s per process**"
        )

    def ok(flag: bool) -> str:
        return "met" if flag else "**missed**"

    command = shlex.join([".venv/bin/python", "-m", "bench.e2e.rollout", *raw])
    return "\n".join(
        [
            "### Model rollout (issue 20): backfill, first request on the new model, A+B replicas",
            "",
            f"`{command}` — {args.users} users × {args.events:,} events + one user of "
            f"{args.long:,}, M = {args.m:,}, random default-shaped models A and B; load average "
            f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (2 shared cores).",
            "",
            "| figure | value | target |",
            "|---|---|---|",
            f"| backfill of B | {f['events']:,.0f} events in {f['backfill_s']:.1f} s wall "
            f"(process start and the one-lease wait included): {rate:,.0f} events/s, "
            f"{args.processes} process(es); {reported} | reported |",
            f"| first /rank per user on B p50 / p99 | {f['first_p50']:.1f} / "
            f"{f['first_p99']:.1f} ms | |",
            f"| warm /rank on B p50 / p99 (a second request, interleaved with the first ones) | "
            f"{f['warm_p50']:.1f} / {f['warm_p99']:.1f} ms | |",
            f"| first p99 / warm p99 | {ratio_first:.2f}× | ≤ 1.5×: {ok(ratio_first <= 1.5)} |",
            f"| read-path rebuilds on B's first requests | {f['first_rebuilds']:.0f} | ≤ 2: "
            f"{ok(f['first_rebuilds'] <= 2)} |",
            f"| A+B alternating / A+A throughput | {f['ab']:.1f} / {f['aa']:.1f} req/s = "
            f"{ratio_tp:.2f}× | ≥ 0.9×: {ok(ratio_tp >= 0.9)} |",
            "| per round, A+B / A+A req/s (order alternating; the spread is the shared machine) | "
            + ", ".join(
                f"{x:.0f}/{y:.0f}"
                for x, y in zip(f["pairs"]["A+B"], f["pairs"]["A+A"], strict=True)
            )
            + " | |",
            f"| rebuilds during the A+B and A+A runs (3 serves + worker) | "
            f"{f['alternating_rebuilds']:.0f} | 0: {ok(f['alternating_rebuilds'] == 0)} |",
            f"| the {args.long:,}-event user's history_length on A / B | {lengths['A']:,} / "
            f"{lengths['B']:,} | 0 truncated: {ok(truncated == 0)} |",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
