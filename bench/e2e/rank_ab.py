"""Same-run A/B of sequential `/rank` latency in `svd` and `svd_exact`: this checkout against a
base revision, each side on its own Redis and its own PostgreSQL history schema.

    .venv/bin/python -m bench.e2e.rank_ab --base main
    .venv/bin/python -m bench.e2e.rank_ab --base 683b3d6 --rounds 3

The base revision is exported with ``git archive`` (``bench.e2e.ab.export``). Each side gets
a private Redis, seeded through its own `solar serve` (U users × N events with ids, 1,000-event
bodies, all applied before measuring), because the Redis layout may differ between
revisions; both sides get ``SOLAR_HISTORY_URL`` (a private PostgreSQL, fsync on, one schema
per side: a revision that predates the durable tier ignores it and reads its log from Redis).
Then, round by round and alternating the sides (so that a busy machine hurts both alike), a
fresh `solar serve` of each side answers ``--requests`` sequential /rank requests (one
client, M candidates, top_k = 100) in `svd`, then in `svd_exact`: p50 and p99 per mode.
`svd_exact` reads the user's whole history (from the durable tier on this checkout) on every
request, so it shows what the history tier costs a rank. Writes section ``rank-ab`` of
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from bench.common import harness
from bench.common.markdown import write_section
from bench.e2e.ab import export

logger = logging.getLogger("bench.e2e.rank_ab")
MODES = ("svd", "svd_exact")


@contextmanager
def seeded_side(
    tree: Path,
    model: Path,
    users: list[str],
    items: list[str],
    events: int,
    env: dict[str, str],
) -> Iterator[str]:
    """A private Redis seeded with ``users`` through a serve of ``tree``; yields its URL."""
    with harness.redis_server() as redis_url:
        with harness.service(model, redis_url, env=env, tree=tree) as base:
            seeded = harness.seed_users(base, users, events, items, concurrency=1)
            deadline = time.monotonic() + 600
            with httpx.Client(base_url=base, timeout=30) as client:
                for user in users:
                    while client.get(f"/users/{user}").json().get("pending", 1) > 0:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{user} not applied in 600 s")
                        time.sleep(0.2)
        logger.info("%s seeded: %d events accepted", tree, seeded.accepted)
        yield redis_url


def one_side(
    tree: Path,
    model: Path,
    redis_url: str,
    env: dict[str, str],
    users: list[str],
    items: list[str],
    args: argparse.Namespace,
) -> dict[str, tuple[float, float]]:
    """(p50, p99) ms per mode of one fresh serve of ``tree``."""
    out = {}
    with harness.service(model, redis_url, env=env, tree=tree) as base:
        for mode in MODES:
            result = harness.measure_sequential(
                base,
                users,
                items,
                candidates=args.m,
                mode=mode,
                max_requests=args.requests,
                max_seconds=300.0,
            )
            if result.failures:
                raise RuntimeError(f"{result.failures} /rank {mode} requests failed on {tree}")
            out[mode] = (result.p50_ms, result.p99_ms)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="main", help="git revision to compare against")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--users", type=int, default=5)
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--m", type=int, default=2_048)
    p.add_argument("--requests", type=int, default=100, help="per mode, side and round")
    p.add_argument("--markdown", type=Path, default=Path("docs/BENCHMARKS.md"))
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    load = os.getloadavg()[0]
    results: dict[str, list[dict[str, tuple[float, float]]]] = {"base": [], "this": []}
    users = [f"rab{u}" for u in range(args.users)]
    with tempfile.TemporaryDirectory(prefix="solar-rank-ab-") as tmp, ExitStack() as stack:
        trees = {"base": export(args.base, Path(tmp) / "base"), "this": harness.REPO}
        model = harness.random_checkpoint(Path(tmp) / "model", n_items=10_000)
        items = harness.vocabulary(model)
        pg_url = stack.enter_context(harness.postgres_history())
        envs = {
            side: {
                "SOLAR_HISTORY_URL": pg_url,
                "SOLAR_HISTORY_SCHEMA": f"rank_ab_{side}",
                "SOLAR_LOG_CAP": str(max(16_384, args.events)),  # a base with a capped log
            }
            for side in trees
        }
        redis_urls = {
            side: stack.enter_context(
                seeded_side(trees[side], model, users, items, args.events, envs[side])
            )
            for side in trees
        }
        for r in range(args.rounds):
            for side in ("base", "this") if r % 2 == 0 else ("this", "base"):
                figures = one_side(
                    trees[side], model, redis_urls[side], envs[side], users, items, args
                )
                logger.info("round %d %s: %s", r, side, figures)
                results[side].append(figures)
    command = shlex.join([".venv/bin/python", "-m", "bench.e2e.rank_ab", *raw])
    text = markdown(results, args, command, load)
    print(text)
    write_section(args.markdown, "rank-ab", text)
    return 0


def markdown(
    results: dict[str, list[dict[str, tuple[float, float]]]],
    args: argparse.Namespace,
    command: str,
    load: float,
) -> str:
    lines = [
        f"## Sequential `/rank` svd and svd_exact against `{args.base}`, same run",
        "",
        f"Command: `{command}` ({os.cpu_count()} CPUs, load average {load:.1f} → "
        f"{os.getloadavg()[0]:.1f}). {args.users} users × {args.events:,} events, M = "
        f"{args.m:,}, top_k = 100, one keep-alive connection (lean client, "
        f"`bench.common.keepalive`), {args.requests} requests per mode, side and "
        "round; each side its own Redis and PostgreSQL history schema (fsync on). Each cell: "
        "the rounds' values in ms (median first).",
        "",
        "| side | svd p50 | svd p99 | svd_exact p50 | svd_exact p99 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for side, label in (("base", f"`{args.base}`"), ("this", "this checkout")):
        cells = []
        for mode in MODES:
            for q in (0, 1):
                values = [r[mode][q] for r in results[side]]
                cells.append(
                    f"{statistics.median(values):.1f} ("
                    + ", ".join(f"{v:.1f}" for v in values)
                    + ")"
                )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
