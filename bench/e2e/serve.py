"""End-to-end serving benchmark over HTTP, against the docs/DESIGN.md §10 targets.

    .venv/bin/python -m bench.e2e.serve                          # artifacts/default-model
    .venv/bin/python -m bench.e2e.serve --model DIR
    .venv/bin/python -m bench.e2e.serve --random-model-if-missing  # no trained model needed

Starts a private redis-server and `solar serve` (one uvicorn process) on free loopback ports,
seeds U users with N-event histories through POST /ingest (events/s), then measures POST /rank
with M candidates and top_k=100 in `svd` and `softmax`:

- open loop at --rate requests/s (default 100): p50 / p99 latency, failures (errors, and
  scheduled requests that could not be sent because 64 were still in flight);
- closed loop with --concurrency clients: saturation throughput, and svd/softmax ratio.

Prints a table and writes everything to --out (JSON). The load generator runs on the same
machine, as in the target ("2 cores, load generator included").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import harness

logger = logging.getLogger("bench.e2e.serve")

TARGET_P99_MS = 30.0
TARGET_RATIO = 10.0
TARGET_INGEST_EVENTS_S = 3_000.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="artifacts/default-model", help="checkpoint directory")
    p.add_argument(
        "--random-model-if-missing",
        action="store_true",
        help="benchmark a random d=64 model when --model does not exist",
    )
    p.add_argument("--users", type=int, default=20, help="users U to seed")
    p.add_argument("--events", type=int, default=10_000, help="events N per user")
    p.add_argument("--ingest-batch", type=int, default=1_000, help="events per /ingest body")
    p.add_argument("--candidates", type=int, default=2_048, help="candidates M per /rank")
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--rate", type=float, default=100.0, help="open-loop requests/s")
    p.add_argument("--concurrency", type=int, default=16, help="clients (closed loop)")
    p.add_argument("--seconds", type=float, default=10.0, help="time cap per measurement")
    p.add_argument("--max-requests", type=int, default=5_000, help="request cap per measurement")
    p.add_argument("--max-batch", type=int, default=None, help="SOLAR_MAX_BATCH for the server")
    p.add_argument("--out", type=Path, default=Path("bench/out/serve.json"))
    return p


def _model_dir(args: argparse.Namespace, scratch: Path) -> Path:
    model = Path(args.model)
    if (model / "model.safetensors").is_file():
        return model
    if not args.random_model_if_missing:
        raise SystemExit(
            f"no checkpoint at {model}: run `make model`, pass --model DIR, "
            "or --random-model-if-missing"
        )
    logger.warning("no checkpoint at %s: benchmarking a random d=64 model", model)
    return harness.random_checkpoint(scratch / "random-model")


def _row(name: str, r: harness.RankResult) -> str:
    rate = f"{r.offered_rate:.0f}/s" if r.offered_rate else "closed"
    server_ms, client_ms = r.cpu_ms_per_request
    return (
        f"{name:<8} {rate:>7} {len(r.latencies_s):>6} {r.failures + r.unsent:>5} {r.p50_ms:>8.1f} "
        f"{r.p99_ms:>8.1f} {r.requests_per_s:>8.1f} {server_ms:>10.2f} {client_ms:>10.2f}"
    )


def _modes(model: Path) -> tuple[str, ...]:
    """svd and softmax (the targets' ratio), then the model's own mode when it is another
    (the default model's `lifelong`: what a /rank without a mode costs)."""
    trained = harness.trained_mode(model)
    return ("svd", "softmax") + (() if trained in ("svd", "softmax") else (trained,))


def _own_modes(results: dict[str, Any]) -> list[str]:
    """The measured modes beyond svd and softmax (``_modes``' third, when there is one)."""
    return [m for m in results if m not in ("ingest", "svd", "softmax")]


def _capacity(r: harness.RankResult, cores: int) -> float:
    """Requests/s that ``cores`` idle cores could sustain at the measured CPU cost."""
    server_ms, client_ms = r.cpu_ms_per_request
    return 1_000.0 * cores / (server_ms + client_ms)


def run(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    """Seed, then measure both modes open- and closed-loop; returns the results document."""
    env = {"SOLAR_LOG_CAP": str(max(16_384, args.events))}
    if args.max_batch:
        env["SOLAR_MAX_BATCH"] = str(args.max_batch)
    users = [f"bench{u}" for u in range(args.users)]
    results: dict[str, Any] = {}
    with harness.redis_server() as redis_url, harness.service(model, redis_url, env=env) as base:
        items = harness.vocabulary(model)
        logger.info("seeding %d users x %d events", args.users, args.events)
        seeded = harness.seed_users(
            base, users, args.events, items, batch=args.ingest_batch, kinds=harness.actions(model)
        )
        results["ingest"] = {**asdict(seeded), "events_per_s": seeded.events_per_s}
        common = {
            "candidates": args.candidates,
            "top_k": args.top_k,
            "max_seconds": args.seconds,
            "max_requests": args.max_requests,
        }
        for mode in _modes(model):
            logger.info("%s: open loop at %.0f req/s", mode, args.rate)
            paced = harness.measure_rank(
                base,
                users,
                items,
                mode=mode,
                rate=args.rate,
                concurrency=max(args.concurrency, 64),
                **common,
            )
            logger.info("%s: closed loop, %d clients", mode, args.concurrency)
            closed = harness.measure_rank(
                base, users, items, mode=mode, concurrency=args.concurrency, **common
            )
            results[mode] = {"open": paced, "closed": closed}
    return results


def report(args: argparse.Namespace, model: Path, results: dict[str, Any], seconds: float) -> str:
    svd, soft = results["svd"], results["softmax"]
    cores = os.cpu_count() or 1
    ratio = svd["closed"].requests_per_s / soft["closed"].requests_per_s
    ingest = results["ingest"]["events_per_s"]
    lines = [
        f"solar serve benchmark: U={args.users} users x N={args.events:,} events, "
        f"M={args.candidates:,} candidates, top_k={args.top_k}, {os.cpu_count()} CPUs, "
        f"model {model}",
        "",
        f"ingest: {results['ingest']['events']:,} events in {results['ingest']['seconds']:.1f} s"
        f" = {ingest:,.0f} events/s   (target >= {TARGET_INGEST_EVENTS_S:,.0f})",
        "",
        "mode        load     ok  fail   p50 ms   p99 ms    req/s  srv cpu ms cli cpu ms",
        _row("svd", svd["open"]),
        _row("svd", svd["closed"]),
        _row("softmax", soft["open"]),
        _row("softmax", soft["closed"]),
        *(_row(m, results[m][load]) for m in _own_modes(results) for load in ("open", "closed")),
        "",
        f"svd p99 at {args.rate:.0f} req/s: {svd['open'].p99_ms:.1f} ms (target <= "
        f"{TARGET_P99_MS:.0f} ms)",
        f"throughput svd / softmax: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x)",
        f"CPU-bound capacity of {cores} idle cores (server + client CPU per request): svd "
        f"{_capacity(svd['closed'], cores):.0f} req/s, softmax "
        f"{_capacity(soft['closed'], cores):.0f} req/s, ratio "
        f"{_capacity(svd['closed'], cores) / _capacity(soft['closed'], cores):.1f}x",
        f"load average during the run: {os.getloadavg()[0]:.1f} (shared machine if > {cores})",
        f"total {seconds:.0f} s",
    ]
    return "\n".join(lines)


def _document(args: argparse.Namespace, results: dict[str, Any], seconds: float) -> dict[str, Any]:
    def summary(r: harness.RankResult) -> dict[str, Any]:
        server_ms, client_ms = r.cpu_ms_per_request
        return {
            "offered_rate": r.offered_rate,
            "ok": len(r.latencies_s),
            "failures": r.failures,
            "unsent": r.unsent,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "requests_per_s": r.requests_per_s,
            "seconds": r.seconds,
            "server_cpu_ms_per_request": server_ms,
            "client_cpu_ms_per_request": client_ms,
        }

    modes = {m: {k: summary(v) for k, v in results[m].items()} for m in results if m != "ingest"}
    ratio = modes["svd"]["closed"]["requests_per_s"] / modes["softmax"]["closed"]["requests_per_s"]
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1m": os.getloadavg()[0],
        },
        "ingest": results["ingest"],
        "rank": modes,
        "svd_softmax_throughput_ratio": ratio,
        "seconds": seconds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="solar-bench-") as scratch:
        model = _model_dir(args, Path(scratch))
        results = run(args, model)
        seconds = time.monotonic() - started
        print(report(args, model, results, seconds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_document(args, results, seconds), indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
