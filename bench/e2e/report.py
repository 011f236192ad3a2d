"""End-to-end benchmark report: /rank latency vs history length, throughput vs batch size.

    .venv/bin/python -m bench.e2e.report                 # full run (~8 min on 2 cores)
    .venv/bin/python -m bench.e2e.report --quick --out /tmp/report   # smoke run (~1 min)

One run, over HTTP against a real ``solar serve`` with a private Redis (both started through
``bench/common/harness.py``), writes under ``--out`` (default ``docs/``):

- ``bench_latency_vs_n.png``: p50 and p99 of ``/rank`` (M candidates, top_k=100, one client)
  for ``svd``, ``svd_exact`` and ``softmax`` as the history grows from 1,000 to 100,000
  events (``SOLAR_LOG_CAP`` is raised to the largest N so the exact modes see every event);
- ``bench_throughput_vs_batch.png``: requests/s and p99 at saturation (closed loop,
  ``--concurrency`` clients, N=10,000) for each ``SOLAR_MAX_BATCH``;
- ``BENCHMARKS.md`` (tables, ratios, the machine, this command) and ``bench_results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import harness
from bench.common.markdown import write_section

logger = logging.getLogger("bench.e2e.report")

MODES = ("svd", "svd_exact", "softmax")
FULL_NS = (1_000, 3_000, 10_000, 30_000, 100_000)
QUICK_NS = (1_000, 3_000)
FULL_BATCHES = (1, 2, 4, 8, 16, 32, 64)
QUICK_BATCHES = (1, 8)


@dataclass(frozen=True)
class LatencyPoint:
    """``/rank`` latency (ms) of one mode at one history length N."""

    mode: str
    n: int
    requests: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


@dataclass(frozen=True)
class BatchPoint:
    """Saturation throughput and latency at one ``SOLAR_MAX_BATCH``."""

    max_batch: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    failures: int


@dataclass
class Report:
    """Everything one run measured, plus how and where."""

    command: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    latency: list[LatencyPoint] = field(default_factory=list)
    batches: list[BatchPoint] = field(default_factory=list)
    seconds: float = 0.0
    ingest_events_per_s: float = math.nan


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }


def latency_point(mode: str, n: int, latencies_s: Sequence[float]) -> LatencyPoint:
    ms = [1000.0 * x for x in latencies_s]
    return LatencyPoint(
        mode=mode,
        n=n,
        requests=len(ms),
        p50_ms=harness.percentile(ms, 50),
        p99_ms=harness.percentile(ms, 99),
        mean_ms=sum(ms) / len(ms) if ms else math.nan,
    )


# ------------------------------------------------------------------------------ plots
def plot_latency(points: Sequence[LatencyPoint], path: Path, candidates: int) -> None:
    """p50 (solid) and p99 (dashed) vs N per mode, log-log."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for mode, color in zip(MODES, ("tab:blue", "tab:orange", "tab:red"), strict=True):
        rows = sorted((p for p in points if p.mode == mode), key=lambda p: p.n)
        if not rows:
            continue
        ns = [p.n for p in rows]
        ax.plot(ns, [p.p50_ms for p in rows], "o-", color=color, label=f"{mode} p50")
        ax.plot(ns, [p.p99_ms for p in rows], "s--", color=color, alpha=0.6, label=f"{mode} p99")
    ax.axhline(30, color="grey", lw=0.8, ls=":", label="30 ms target (p99, svd)")
    ax.set(xscale="log", yscale="log", xlabel="history length N (events)", ylabel="/rank ms")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}")
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_title(f"/rank latency vs history length (M={candidates}, top_k=100, HTTP + Redis)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_batches(points: Sequence[BatchPoint], path: Path, concurrency: int) -> None:
    """Requests/s (bars) and p99 (line) vs SOLAR_MAX_BATCH."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    x = list(range(len(points)))  # evenly spaced bars, labelled with the batch sizes
    ax.bar(x, [p.requests_per_s for p in points], color="tab:blue", alpha=0.7)
    ax.set_xticks(x, [str(p.max_batch) for p in points])
    ax.set(xlabel="SOLAR_MAX_BATCH", ylabel="requests/s (bars)")
    twin = ax.twinx()
    twin.plot(x, [p.p99_ms for p in points], "o-", color="tab:red")
    twin.set_ylabel("p99 ms (line)", color="tab:red")
    ax.set_title(f"svd /rank throughput vs batch size ({concurrency} closed-loop clients)")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------- markdown
def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}×" if b and math.isfinite(a) and math.isfinite(b) else "-"


def markdown(report: Report) -> str:
    """BENCHMARKS.md: the command, the machine, both tables, the targets as ratios."""
    s = report.settings
    lines = [
        "# Benchmarks",
        "",
        "End to end over HTTP: `solar serve` (one uvicorn process) with a private Redis, the "
        "client in the same machine. Regenerate with:",
        "",
        "```sh",
        report.command,
        "```",
        "",
        f"Machine: {report.machine['cpus']} CPUs, {report.machine['platform']}, torch "
        f"{report.machine['torch']}, CUDA {'yes' if report.machine['cuda'] else 'no'}. "
        f"Run took {report.seconds / 60:.1f} min. Settings: `{json.dumps(s)}`. Seeding "
        f"through POST /ingest (1,000-event bodies, one in flight) ran at "
        f"{report.ingest_events_per_s:,.0f} events/s.",
        "",
        "## /rank latency vs history length",
        "",
        f"One client, sequential requests, M = {s['candidates']} candidates, top_k = 100. "
        "![latency vs N](bench_latency_vs_n.png)",
        "",
        "| N | " + " | ".join(f"{m} p50 / p99 ms" for m in MODES) + " | softmax/svd p50 |",
        "| --- | " + " | ".join("---" for _ in MODES) + " | --- |",
    ]
    by_key = {(p.mode, p.n): p for p in report.latency}
    for n in sorted({p.n for p in report.latency}):
        cells = []
        for mode in MODES:
            p = by_key.get((mode, n))
            cells.append(f"{p.p50_ms:.1f} / {p.p99_ms:.1f}" if p else "-")
        svd, soft = by_key.get(("svd", n)), by_key.get(("softmax", n))
        ratio = _ratio(soft.p50_ms, svd.p50_ms) if svd and soft else "-"
        lines.append(f"| {n:,} | " + " | ".join(cells) + f" | {ratio} |")
    svd_points = sorted((p for p in report.latency if p.mode == "svd"), key=lambda p: p.n)
    if len(svd_points) >= 2:
        first, last = svd_points[0], svd_points[-1]
        lines += [
            "",
            f"svd flatness: p50 at N={last.n:,} is {_ratio(last.p50_ms, first.p50_ms)} the "
            f"p50 at N={first.n:,} (the state is the same ~12.8 KB whatever N is).",
        ]
    lines += [
        "",
        "## Throughput vs batch size (svd, N = 10,000)",
        "",
        f"{s['concurrency']} closed-loop clients for {s['batch_seconds']} s per setting. "
        "![throughput vs batch size](bench_throughput_vs_batch.png)",
        "",
        "| SOLAR_MAX_BATCH | requests/s | p50 ms | p99 ms | failures |",
        "| --- | --- | --- | --- | --- |",
    ]
    for b in report.batches:
        lines.append(
            f"| {b.max_batch} | {b.requests_per_s:.1f} | {b.p50_ms:.1f} | {b.p99_ms:.1f} "
            f"| {b.failures} |"
        )
    return "\n".join(lines) + "\n"


def write_outputs(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plot_latency(report.latency, out / "bench_latency_vs_n.png", report.settings["candidates"])
    plot_batches(
        report.batches, out / "bench_throughput_vs_batch.png", report.settings["concurrency"]
    )
    # Only this benchmark's section: bench/micro/stages.py writes its own into the same file.
    write_section(out / "BENCHMARKS.md", "report", markdown(report))
    document = asdict(report)
    (out / "bench_results.json").write_text(json.dumps(document, indent=1) + "\n")


def load_report(path: Path) -> Report:
    """A Report back from its ``bench_results.json``."""
    doc = json.loads(path.read_text())
    doc["latency"] = [LatencyPoint(**p) for p in doc["latency"]]
    doc["batches"] = [BatchPoint(**p) for p in doc["batches"]]
    return Report(**doc)


# ------------------------------------------------------------------------- experiments
def run_latency_sweep(
    args: argparse.Namespace, model_dir: Path, ns: Sequence[int]
) -> tuple[list[LatencyPoint], float]:
    """One service with the log cap at max(N); user ``n<N>`` holds N events.

    Returns the points and the seeding rate (events/s through POST /ingest).
    """
    points = []
    env = {"SOLAR_LOG_CAP": str(max(ns)), "SOLAR_MAX_BATCH": "32"}
    items = harness.vocabulary(model_dir)
    with (
        harness.redis_server() as redis_url,
        harness.service(model_dir, redis_url, env=env) as base_url,
    ):
        # One body in flight: the bodies of one user must not race each other.
        events, seconds = 0, 0.0
        for n in ns:
            seeded = harness.seed_users(base_url, [f"n{n}"], n, items, concurrency=1)
            events, seconds = events + seeded.events, seconds + seeded.seconds
        logger.info("seeded %d events at %.0f events/s", events, events / seconds)
        for mode in MODES:
            for n in ns:
                result = harness.measure_rank(
                    base_url,
                    [f"n{n}"],
                    items,
                    candidates=args.candidates,
                    mode=mode,
                    concurrency=1,
                    max_requests=args.requests,
                    max_seconds=args.point_seconds,
                    warmup_requests=2,
                )
                point = latency_point(mode, n, result.latencies_s)
                logger.info(
                    "%s N=%d: p50 %.1f ms p99 %.1f ms (%d requests, %d failed)",
                    mode,
                    n,
                    point.p50_ms,
                    point.p99_ms,
                    point.requests,
                    result.failures,
                )
                points.append(point)
    return points, events / seconds


def run_batch_sweep(
    args: argparse.Namespace, model_dir: Path, batches: Sequence[int]
) -> list[BatchPoint]:
    """Shared Redis seeded once; one service start per SOLAR_MAX_BATCH."""
    points = []
    users = [f"b{k}" for k in range(args.batch_users)]
    items = harness.vocabulary(model_dir)
    with harness.redis_server() as redis_url:
        for max_batch in batches:
            env = {"SOLAR_MAX_BATCH": str(max_batch)}
            with harness.service(model_dir, redis_url, env=env) as base_url:
                if max_batch == batches[0]:
                    harness.seed_users(base_url, users, 10_000, items, concurrency=1)
                result = harness.measure_rank(
                    base_url,
                    users,
                    items,
                    candidates=args.candidates,
                    mode="svd",
                    concurrency=args.concurrency,
                    max_seconds=args.batch_seconds,
                )
            point = BatchPoint(
                max_batch=max_batch,
                requests_per_s=result.requests_per_s,
                p50_ms=result.p50_ms,
                p99_ms=result.p99_ms,
                failures=result.failures,
            )
            logger.info(
                "max_batch=%d: %.1f req/s, p50 %.1f ms, p99 %.1f ms",
                max_batch,
                point.requests_per_s,
                point.p50_ms,
                point.p99_ms,
            )
            points.append(point)
    return points


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model-dir",
        help="checkpoint to serve; default: a random default-shaped model (d=64, r=32) over "
        "--items items (latency does not depend on the weights, and M=2,048 needs ≥ 2,048 items)",
    )
    p.add_argument("--items", type=int, default=10_000, help="items of the random model")
    p.add_argument("--out", type=Path, default=Path("docs"))
    p.add_argument("--quick", action="store_true", help="small N and batch lists (smoke test)")
    p.add_argument("--candidates", type=int, default=2048)
    p.add_argument("--requests", type=int, default=40, help="requests per (mode, N) point")
    p.add_argument("--point-seconds", type=float, default=12.0, help="time cap per point")
    p.add_argument("--concurrency", type=int, default=32, help="clients in the batch sweep")
    p.add_argument("--batch-seconds", type=float, default=10.0, help="seconds per batch size")
    p.add_argument("--batch-users", type=int, default=8, help="users (10,000 events) loaded")
    p.add_argument("--replot", type=Path, help="only redraw --out from a bench_results.json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    if args.replot:
        write_outputs(load_report(args.replot), args.out)
        return 0
    # Inherited by the service processes: see docs/OPERATIONS.md, "Threads".
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    started = time.monotonic()
    ns, batches = (QUICK_NS, QUICK_BATCHES) if args.quick else (FULL_NS, FULL_BATCHES)
    command = ".venv/bin/python -m bench.e2e.report" + (" --quick" if args.quick else "")
    keys = ("candidates", "requests", "point_seconds", "concurrency", "batch_seconds")
    with tempfile.TemporaryDirectory(prefix="solar-report-") as tmp:
        if args.model_dir:
            model_dir = Path(args.model_dir)
        else:
            model_dir = harness.random_checkpoint(Path(tmp) / "model", n_items=args.items)
        vocabulary = len(harness.vocabulary(model_dir))
        settings = {k: getattr(args, k) for k in keys}
        settings |= {
            "candidates": min(args.candidates, vocabulary),
            "vocabulary": vocabulary,
            "model": args.model_dir or "random",
            "ns": list(ns),
            "batches": list(batches),
        }
        report = Report(command=command, machine=machine_info(), settings=settings)
        report.latency, report.ingest_events_per_s = run_latency_sweep(args, model_dir, ns)
        report.batches = run_batch_sweep(args, model_dir, batches)
    report.seconds = time.monotonic() - started
    write_outputs(report, args.out)
    logger.info("wrote %s in %.1f min", args.out / "BENCHMARKS.md", report.seconds / 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
