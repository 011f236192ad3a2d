"""bench/e2e/loadrange.py's pure parts: one row per run, the table of both sides."""

from __future__ import annotations

import argparse
from typing import Any

from bench.common.mixed import MixedResult
from bench.e2e import loadrange


def _row(rate: float | None, p99_s: float) -> dict[str, Any]:
    result = MixedResult(
        offered_rate=rate, seconds=10.0, rank_s=[0.001] * 98 + [p99_s] * 2, generator_cpu_s=0.5
    )
    server = {
        "solar_rank_stage_seconds": {"pass": {"count": 100, "p50": 1.0, "p99": 7.5}},
        "solar_gc_pause_seconds": {"0": {"count": 3, "p50": 0.5, "p99": 0.9}},
    }
    worker = {"solar_apply_lag_seconds": {"all": {"count": 5, "p50": 5.0, "p99": 40.0}}}
    return loadrange._row(rate, result, server, worker)


def test_a_row_holds_the_client_and_server_figures() -> None:
    row = _row(30.0, 0.2)
    assert row["rank_per_s"] == 10.0 and row["rank_p99_ms"] > 1.0
    assert row["stage_p99_ms"]["pass"] == 7.5 and row["stage_p99_ms"]["store"] is None
    assert row["apply_lag_p99_ms"] == 40.0 and row["gc_pauses"] == {"0": (3, 0.9)}
    assert row["generator_cpu_ms"] == 5.0  # 0.5 s of the generator's CPU over 100 requests


def test_markdown_shows_each_rate_with_the_median_and_every_round() -> None:
    rounds = [[_row(30.0, 0.01), _row(None, 0.05)], [_row(30.0, 0.03), _row(None, 0.05)]]
    args = argparse.Namespace(
        base="main",
        users=10,
        seed_users=2,
        events=5,
        seconds=1.0,
        saturation_seconds=1.0,
        concurrency=2,
    )
    text = loadrange.markdown({"base": rounds, "this": rounds[:1]}, args, "cmd", (1.0, 2.0))
    lines = [line for line in text.splitlines() if line.startswith("| `main` | 30 |")]
    assert len(lines) == 1 and "| 0 |" in lines[0]  # no failures
    assert "| this branch | saturation |" in text
    assert "gen 0: 3 pauses, p99 0.9 ms" in text
