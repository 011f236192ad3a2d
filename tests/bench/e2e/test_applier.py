"""bench/e2e/applier.py's pure parts: reading /metrics texts, the table of both sides."""

from __future__ import annotations

import argparse

from bench.e2e import applier

METRICS = """\
solar_store_seconds_count{op="read_log"} 30.0
solar_store_seconds_count{op="commit"} 20.0
solar_apply_batch_events_sum 50.0
"""


def test_metrics_are_summed_over_labels_and_counted_by_op() -> None:
    assert applier._sum(METRICS, "solar_store_seconds_count") == 50.0
    assert applier._sum(METRICS, "solar_apply_batch_events_sum") == 50.0
    assert applier._ops(METRICS) == {"read_log": 30.0, "commit": 20.0}


def test_markdown_shows_cpu_per_event_and_per_block() -> None:
    run = applier.Run(
        events=1000.0,
        blocks=500.0,
        cpu_s=1.0,
        round_trips=1000.0,
        lag_p50_ms=5.0,
        lag_p99_ms=50.0,
        ops={},
    )
    args = argparse.Namespace(base="main", rate=30.0, users=2_000, seconds=10.0)
    text = applier.markdown({"base": [run], "this": [run, run]}, args, "python -m x", (1.0, 2.0))
    assert "| `main` | 1000.00 | 500.00 | 1.00 | 2.00 | 2.00 | 5.00 | 50.00 |" in text
    assert "| this branch | 1000.00 (1000.00, 1000.00) |" in text
