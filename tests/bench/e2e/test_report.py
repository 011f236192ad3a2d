"""bench/e2e/report.py's pure parts: percentiles, the markdown and the plots (no service)."""

from __future__ import annotations

import importlib
import math
import types
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def report() -> types.ModuleType:
    return importlib.import_module("bench.e2e.report")


def test_latency_point(report: types.ModuleType) -> None:
    point = report.latency_point("svd", 1_000, [0.003, 0.001, 0.002])
    assert (point.p50_ms, point.requests) == (pytest.approx(2.0), 3)
    assert point.p99_ms == pytest.approx(2.98)
    assert math.isnan(report.latency_point("svd", 1, []).p50_ms)


def test_outputs_hold_tables_ratios_and_plots(report: types.ModuleType, tmp_path: Path) -> None:
    latency = [
        report.latency_point(mode, n, [scale * n / 1e6 + 0.005] * 5)
        for mode, scale in (("svd", 0.0), ("svd_exact", 1.0), ("softmax", 4.0))
        for n in (1_000, 100_000)
    ]
    batches = [report.BatchPoint(b, 100.0 * b, 5.0, 9.0 + b, 0) for b in (1, 8)]
    settings = {
        "candidates": 2048,
        "requests": 5,
        "point_seconds": 1.0,
        "concurrency": 4,
        "batch_seconds": 1.0,
        "ns": [1_000, 100_000],
        "batches": [1, 8],
    }
    doc = report.Report(
        "python -m bench.e2e.report",
        report.machine_info(),
        settings,
        latency,
        batches,
        60.0,
        1234.0,
    )
    report.write_outputs(doc, tmp_path)
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "python -m bench.e2e.report" in md and "1,234 events/s" in md
    assert "| 100,000 | 5.0 / 5.0 | 105.0 / 105.0 | 405.0 / 405.0 | 81.0× |" in md
    assert "svd flatness: p50 at N=100,000 is 1.0×" in md
    assert "| 8 | 800.0 | 5.0 | 17.0 | 0 |" in md
    for name in ("bench_latency_vs_n.png", "bench_throughput_vs_batch.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.load_report(tmp_path / "bench_results.json") == doc  # --replot round trip
