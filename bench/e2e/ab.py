"""Same-run A/B of the end-to-end /rank figures: this checkout against a base revision.

    .venv/bin/python -m bench.e2e.ab --base main          # or a commit, e.g. --base 3db8df8
    .venv/bin/python -m bench.e2e.ab --base main --rounds 3

The base revision is exported with ``git archive`` into a temporary directory and served
from there with the same environment, model, Redis and PostgreSQL history. One private Redis
and one private PostgreSQL (the durable tier every side reads `softmax` histories from) are
seeded once (U users × N events through POST /ingest); then, round by round and alternating the two
sides (so that a busy machine hurts both alike), a fresh `solar serve` of each side gets:
sequential `/rank` (one keep-alive connection through ``bench.common.keepalive``, M
candidates, top_k=100, svd): p50 / p99, and the p50 of the same through httpx (whose own
Python time per request adds to it: the figure before the lean client); and closed-loop
saturation throughput (``--concurrency`` clients) in svd and in softmax, and their ratio.
"server CPU ms" is the service process's CPU time per request (``process_cpu_seconds_total``):
what a request costs whatever else runs on the machine.
The load generator runs on the same machine. Writes section ``ab`` of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.common import harness
from bench.common.markdown import write_section

logger = logging.getLogger("bench.e2e.ab")
FIGURES = (
    "seq p50 ms",
    "seq p99 ms",
    "seq server CPU ms",
    "seq p50 ms, httpx",
    "svd req/s",
    "svd server CPU ms",
    "softmax req/s",
    "svd/softmax",
)


def export(revision: str, target: Path) -> Path:
    """The tree of ``revision`` (git archive) under ``target``."""
    archive = subprocess.run(
        ["git", "archive", revision], cwd=harness.REPO, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def one_side(
    tree: Path,
    model: Path,
    redis_url: str,
    users: list[str],
    items: list[str],
    args: argparse.Namespace,
) -> dict[str, float]:
    """The figures of one fresh service of ``tree``."""
    with harness.service(model, redis_url, tree=tree, env=args.env) as base:
        seq = harness.measure_sequential(
            base, users, items, candidates=args.m, max_requests=args.sequential
        )
        seq_httpx = harness.measure_rank(
            base,
            users,
            items,
            candidates=args.m,
            concurrency=1,
            max_requests=args.sequential,
            max_seconds=60.0,
        )
        closed = {
            mode: harness.measure_rank(
                base,
                users,
                items,
                candidates=args.m,
                mode=mode,
                concurrency=args.concurrency,
                max_seconds=args.seconds,
            )
            for mode in ("svd", "softmax")
        }
    svd, soft = closed["svd"].requests_per_s, closed["softmax"].requests_per_s
    values = (
        seq.p50_ms,
        seq.p99_ms,
        seq.cpu_ms_per_request[0],
        seq_httpx.p50_ms,
        svd,
        closed["svd"].cpu_ms_per_request[0],
        soft,
        svd / soft,
    )
    return dict(zip(FIGURES, values, strict=True))


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="main", help="git revision to compare against")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--m", type=int, default=2_048)
    p.add_argument("--sequential", type=int, default=300, help="sequential requests per side")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0, help="per closed-loop measurement")
    p.add_argument("--markdown", type=Path, default=Path("docs/BENCHMARKS.md"))
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    args.env = {"SOLAR_LOG_CAP": str(max(16_384, args.events))}
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    load = os.getloadavg()[0]
    results: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory(prefix="solar-ab-") as tmp:
        trees = {"base": export(args.base, Path(tmp) / "base"), "this": harness.REPO}
        model = harness.random_checkpoint(Path(tmp) / "model", n_items=10_000)
        items = harness.vocabulary(model)
        users = [f"ab{u}" for u in range(args.users)]
        # The history must outlive each serve process: the embedded one dies with the seeding
        # serve, and `softmax` would then attend to an empty history (a 1× "ratio").
        with harness.redis_server() as redis_url, harness.postgres_history() as history_url:
            args.env["SOLAR_HISTORY_URL"] = history_url
            with harness.service(model, redis_url, env=args.env) as base:
                harness.seed_users(base, users, args.events, items, concurrency=1)
            for r in range(args.rounds):
                for side in ("base", "this") if r % 2 == 0 else ("this", "base"):
                    figures = one_side(trees[side], model, redis_url, users, items, args)
                    logger.info("round %d %s: %s", r, side, figures)
                    results[side].append(figures)
    text = markdown(
        results, args, shlex.join([".venv/bin/python", "-m", "bench.e2e.ab", *raw]), load
    )
    print(text)
    write_section(args.markdown, "ab", text)
    return 0


def markdown(
    results: dict[str, list[dict[str, float]]], args: argparse.Namespace, command: str, load: float
) -> str:
    lines = [
        f"## End to end against `{args.base}`, same run",
        "",
        f"Command: `{command}` ({os.cpu_count()} CPUs, load average {load:.1f} → "
        f"{os.getloadavg()[0]:.1f}). {args.users} users × {args.events:,} events, M = "
        f"{args.m:,}, top_k = 100; sequential: one keep-alive connection, lean client "
        "(`bench.common.keepalive`; the httpx column: the same through httpx); throughput: "
        f"{args.concurrency} "
        "closed-loop clients, load generator on the same cores. Each cell: the rounds' values "
        "(median first).",
        "",
        "| side | " + " | ".join(FIGURES) + " |",
        "|" + " --- |" * (len(FIGURES) + 1),
    ]
    for side, label in (("base", f"`{args.base}`"), ("this", "this branch")):
        cells = []
        for figure in FIGURES:
            values = [r[figure] for r in results[side]]
            cells.append(
                f"{statistics.median(values):.1f} (" + ", ".join(f"{v:.1f}" for v in values) + ")"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
