"""Throughput and latency of the batched /rank pass vs batch size, per device.

    .venv/bin/python -m bench.micro.device                        # CPU only (this machine)
    .venv-cuda/bin/python -m bench.micro.device --devices cpu,cuda   # what bench/gpu.sh runs

In process, through ``service.scoring.BatchScorer`` exactly as the service calls it (inputs
packed and sent in one host → device copy, the fused pass, top-k on the device, one wait for
the results), on a random default-shaped model (d=64, r=32, 10,000 items), `svd` mode,
top_k=100. For each device, M and batch size B: B requests scored together back to back for
``--seconds``; requests/s = B × batches / elapsed, and p50/p99 of the batch latency (what
each request of the batch waits for its scores). CPU runs with ``--cpu-threads`` torch
threads (1: one serve process per core). The CUDA dtype is chosen as the service chooses it
(``SOLAR_SERVE_DTYPE=auto``: bfloat16 when logits stay within 1e-2 of float32).

Writes section ``device`` of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.common import harness
from bench.common.load import percentile
from bench.common.markdown import write_section
from model.checkpoint import load_checkpoint
from model.ranker import Ranker, ScoreRequest
from service.scoring.precision import choose_dtype
from service.scoring.scorer import BatchScorer, RankJob

logger = logging.getLogger("bench.micro.device")


@dataclass(frozen=True)
class Point:
    device: str
    dtype: str
    m: int
    b: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float


def _jobs(ranker: Ranker, m: int, b: int, seed: int) -> list[RankJob]:
    gen = torch.Generator().manual_seed(seed)
    config = ranker.config
    return [
        RankJob(
            "svd",
            ScoreRequest(
                torch.randint(1, config.n_items, (m,), generator=gen),
                interests=torch.randn(config.rank, config.dim, generator=gen) * 0.3,
            ),
            100,
        )
        for _ in range(b)
    ]


def measure(scorer: BatchScorer, jobs: list[RankJob], seconds: float) -> tuple[float, list[float]]:
    """(requests/s, batch latencies in s) of scoring ``jobs`` back to back for ``seconds``."""
    scorer(jobs)  # warm: buffers sized, kernels loaded
    latencies = []
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds or len(latencies) < 5:
        scorer(jobs)
        latencies.append(time.perf_counter() - now)
    return len(jobs) * len(latencies) / (time.perf_counter() - start), latencies


def run(
    model_dir: Path,
    devices: Sequence[str],
    ms: Sequence[int],
    batches: Sequence[int],
    seconds: float,
) -> list[Point]:
    points = []
    for name in devices:
        ranker = load_checkpoint(model_dir, device=torch.device(name)).ranker
        dtype = choose_dtype(ranker, ranker.config.rank, "auto")
        scorer = BatchScorer(ranker, history_batch_elements=1 << 26, dtype=dtype)
        for m in ms:
            for b in batches:
                rate, latencies = measure(scorer, _jobs(ranker, m, b, seed=b), seconds)
                p50, p99 = (1e3 * percentile(latencies, q) for q in (50, 99))
                point = Point(name, str(dtype).removeprefix("torch."), m, b, rate, p50, p99)
                logger.info("%s", point)
                points.append(point)
    return points


def markdown(points: Sequence[Point], command: str, note: str) -> str:
    lines = [
        "## Batched pass vs batch size, per device (svd, top_k=100)",
        "",
        f"Command: `{command}` ({note}). In process through `BatchScorer` (one host → device "
        "copy per pass, top-k on the device); p50/p99 of the batch latency.",
        "",
        "| device | dtype | M | B | requests/s | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {p.device} | {p.dtype} | {p.m:,} | {p.b} | {p.requests_per_s:,.1f} | "
        f"{p.p50_ms:.2f} | {p.p99_ms:.2f} |"
        for p in points
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", default="cpu", help="comma-separated torch devices")
    p.add_argument("--ms", default="2048,8192")
    p.add_argument("--batches", default="1,2,4,8,16,32,64")
    p.add_argument("--seconds", type=float, default=3.0, help="per point")
    p.add_argument("--cpu-threads", type=int, default=1)
    p.add_argument("--markdown", type=Path, default=Path("docs/BENCHMARKS.md"))
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    torch.set_num_threads(args.cpu_threads)
    devices = args.devices.split(",")
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--devices names cuda but torch sees no CUDA device")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="solar-device-") as tmp:
        model_dir = harness.random_checkpoint(Path(tmp) / "model", n_items=10_000)
        points = run(
            model_dir,
            devices,
            [int(x) for x in args.ms.split(",")],
            [int(x) for x in args.batches.split(",")],
            args.seconds,
        )
    gpu = torch.cuda.get_device_name() if "cuda" in devices else "no GPU"
    note = (
        f"{os.cpu_count()} CPUs, {args.cpu_threads} torch thread(s), {gpu}, torch "
        f"{torch.__version__}; load average {load:.1f} → {os.getloadavg()[0]:.1f}"
    )
    text = markdown(
        points, shlex.join([".venv/bin/python", "-m", "bench.micro.device", *raw]), note
    )
    print(text)
    write_section(args.markdown, "device", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
