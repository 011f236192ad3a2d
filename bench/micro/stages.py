"""Stage profile of POST /rank next to the roofline of its batched pass.

    .venv/bin/python -m bench.micro.stages              # M ∈ {512, 2048, 8192} × B ∈ {1, 8, 32}
    .venv/bin/python -m bench.micro.stages --quick      # smaller grid, shorter budgets

In process, with a private redis-server and a random default-shaped model (d=64, r=32, 10,000
items), each stage of a `svd` /rank request runs alone through the service's own functions
and is timed (median wall time, one torch thread, as a serve process runs): body decode,
validation, candidate id → row, store GET, state decode + interests, queue wait (submit →
the batch handler starts, B requests submitted together), the batched model pass (B requests),
top-k and response encode. Next to the pass: the ranker's FLOPs (``model.flops``) and this
CPU's single-thread GEMM rate on the pass's shapes measured in the same run, just before it
(``bench.micro.roofline``). Then, over HTTP (a real ``solar serve`` with Redis), sequential /rank
latency at each M, with GET /healthz as the HTTP floor of the same run.

Writes the section ``stages`` of docs/BENCHMARKS.md (``--section`` to name another) and
bench/out/stages.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench.common import harness
from bench.common.markdown import write_section
from bench.micro.rankpath import STAGES, RankPath
from bench.micro.roofline import gemm_rate_gflops, median_s
from model.modes import serving_flops

logger = logging.getLogger("bench.micro.stages")

FULL_MS, FULL_BATCHES = (512, 2_048, 8_192), (1, 8, 32)
QUICK_MS, QUICK_BATCHES = (512, 2_048), (1, 8)


@dataclass(frozen=True)
class StageRow:
    """Milliseconds per request of every stage at one (M, B), and the pass's roofline."""

    m: int
    b: int
    stage_ms: dict[str, float]  # per request; "pass" and "queue wait" are per batch / B
    pass_batch_ms: float
    mflop_per_request: float
    gemm_gflops: float

    @property
    def roofline_ms(self) -> float:
        """Per request: the pass's FLOPs at the measured GEMM rate."""
        return self.mflop_per_request / self.gemm_gflops

    @property
    def non_model_ms(self) -> float:
        return sum(v for k, v in self.stage_ms.items() if k != "pass")


@dataclass(frozen=True)
class HttpRow:
    """Sequential /rank over HTTP with Redis at M candidates; the /healthz floor."""

    m: int
    requests: int
    p50_ms: float
    p99_ms: float
    healthz_p50_ms: float


async def profile(
    path: RankPath, ms: Sequence[int], batches: Sequence[int], budget_s: float
) -> list[StageRow]:
    """Every stage at every (M, B)."""
    rows = []
    config = path.model.checkpoint.ranker.config
    for m in ms:
        per_request = await path.request_stages(m, budget_s)
        for b in batches:
            batch = await path.batch_stages(m, b, budget_s)
            chunk_rows = min(b * m, path.scorer.pass_rows)
            rate = gemm_rate_gflops(config, chunk_rows, budget_s)
            pass_s = median_s(lambda m=m, b=b: path.model_pass(m, b), budget_s)
            flops = serving_flops(config, "svd", m, path.model.rank).total
            stage_ms = {**per_request, **batch, "pass": 1e3 * pass_s / b}
            rows.append(StageRow(m, b, stage_ms, 1e3 * pass_s, flops / 1e6, rate))
            logger.info(
                "M=%d B=%d: pass %.2f ms/request (roofline %.2f), rest %.2f ms",
                m,
                b,
                rows[-1].stage_ms["pass"],
                rows[-1].roofline_ms,
                rows[-1].non_model_ms,
            )
    return rows


def http_latency(model_dir: Path, ms: Sequence[int], requests: int) -> list[HttpRow]:
    """Sequential /rank (one client, top_k=100, svd) against `solar serve` + Redis."""
    out = []
    items = harness.vocabulary(model_dir)
    users = ["h0", "h1"]
    with harness.redis_server() as redis_url, harness.service(model_dir, redis_url) as base:
        harness.seed_users(base, users, 1_000, items, concurrency=1)
        for m in ms:
            floor = harness.measure_healthz(base, requests)
            result = harness.measure_sequential(
                base, users, items, candidates=m, max_requests=requests, max_seconds=30.0
            )
            out.append(HttpRow(m, len(result.latencies_s), result.p50_ms, result.p99_ms, floor))
            logger.info(
                "HTTP M=%d: p50 %.2f ms p99 %.2f ms (healthz %.2f ms)",
                m,
                result.p50_ms,
                result.p99_ms,
                floor,
            )
    return out


def markdown(rows: Sequence[StageRow], http: Sequence[HttpRow], meta: dict[str, Any]) -> str:
    """The stage table, the roofline columns and the HTTP table."""
    heads = " | ".join(STAGES)
    lines = [
        meta["title"],
        "",
        f"Command: `{meta['command']}` ({meta['machine']}; load average {meta['load']:.1f} at "
        f"the start, {meta['load_end']:.1f} at the end; {meta['seconds']:.0f} s).",
        "",
        "In process, ms per request (pass and queue wait: per batch ÷ B); roofline = the pass's "
        "FLOPs ÷ the single-thread GEMM rate on its shapes, measured in the same run.",
        "",
        f"| M | B | {heads} | non-model | pass/batch | MFLOP/req | GEMM GFLOP/s | roofline "
        "ms/req | pass ÷ roofline |",
        "|" + " --- |" * (len(STAGES) + 9),
    ]
    for r in rows:
        cells = " | ".join(f"{r.stage_ms[s]:.3f}" for s in STAGES)
        lines.append(
            f"| {r.m:,} | {r.b} | {cells} | {r.non_model_ms:.2f} | {r.pass_batch_ms:.1f} | "
            f"{r.mflop_per_request:.1f} | {r.gemm_gflops:.1f} | {r.roofline_ms:.2f} | "
            f"{r.stage_ms['pass'] / r.roofline_ms:.2f}× |"
        )
    if http:
        lines += [
            "",
            "Sequential `/rank` over HTTP (`solar serve` + Redis, one keep-alive connection, lean "
            "client `bench.common.keepalive`, svd, top_k=100):",
            "",
            "| M | requests | p50 ms | p99 ms | GET /healthz p50 ms (same run) |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {h.m:,} | {h.requests} | {h.p50_ms:.2f} | {h.p99_ms:.2f} | {h.healthz_p50_ms:.2f} |"
            for h in http
        ]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller grid, shorter budgets")
    p.add_argument("--budget-s", type=float, default=None, help="seconds per measurement")
    p.add_argument("--http-requests", type=int, default=300, help="requests per HTTP point")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP measurement")
    p.add_argument("--markdown", type=Path, default=Path("docs/BENCHMARKS.md"))
    p.add_argument("--section", default="stages", help="section of --markdown to replace")
    p.add_argument("--title", default="## Stage profile of /rank (svd)", help="its heading")
    p.add_argument("--json", type=Path, default=Path("bench/out/stages.json"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(raw)
    ms, batches = (QUICK_MS, QUICK_BATCHES) if args.quick else (FULL_MS, FULL_BATCHES)
    budget_s = args.budget_s or (0.2 if args.quick else 0.6)
    torch.set_num_threads(1)  # one torch thread per serve process
    started, load = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="solar-stages-") as tmp:
        model_dir = harness.random_checkpoint(Path(tmp) / "model", n_items=10_000)
        with harness.redis_server() as redis_url:
            rows = asyncio.run(_profile(model_dir, redis_url, ms, batches, budget_s))
        http = [] if args.no_http else http_latency(model_dir, ms, args.http_requests)
    meta = {
        "command": shlex.join([".venv/bin/python", "-m", "bench.micro.stages", *raw]),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}",
        "title": args.title,
        "load": load,
        "load_end": os.getloadavg()[0],
        "seconds": time.monotonic() - started,
    }
    text = markdown(rows, http, meta)
    print(text)
    write_section(args.markdown, args.section, text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "rows": [asdict(r) for r in rows], "http": [asdict(h) for h in http]}
    args.json.write_text(json.dumps(document, indent=1) + "\n")
    return 0


async def _profile(
    model_dir: Path, redis_url: str, ms: Sequence[int], batches: Sequence[int], budget_s: float
) -> list[StageRow]:
    path = await RankPath.open(model_dir, redis_url, users=max(batches))
    try:
        return await profile(path, ms, batches, budget_s)
    finally:
        await path.close()


if __name__ == "__main__":
    raise SystemExit(main())
