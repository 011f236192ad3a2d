"""bench/e2e/rollout.py's pure part: the table, its verdicts and the backfill's own rate."""

from __future__ import annotations

import argparse
from typing import Any

from bench.e2e import rollout


def _figures(**changes: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "first_p50": 8.0,
        "first_p99": 12.0,
        "warm_p50": 8.0,
        "warm_p99": 10.0,
        "first_rebuilds": 0.0,
        "ab": 95.0,
        "aa": 100.0,
        "pairs": {"A+B": [90.0, 100.0], "A+A": [100.0, 100.0]},
        "alternating_rebuilds": 0.0,
        "backfill_s": 10.0,
        "events": 200_000,
    }
    return {**figures, **changes}


ARGS = argparse.Namespace(users=60, events=3_000, long=20_000, m=2_048, processes=2)
SUMMARY = (
    "backfill v complete: 61 users, 200000 events in 2.0 s (100000 events/s, 50000 per process)"
)


def test_targets_met() -> None:
    text = rollout.markdown(
        _figures(), {"A": 20_000, "B": 20_000}, ARGS, SUMMARY, (1, 1, 1), (2, 2, 2), []
    )
    assert "| first p99 / warm p99 | 1.20× | ≤ 1.5×: met |" in text
    assert "= 0.95× | ≥ 0.9×: met |" in text
    assert "**50,000 events/s per process**" in text
    assert "90/100, 100/100" in text
    assert "**missed**" not in text


def test_targets_missed() -> None:
    figures = _figures(first_p99=20.0, first_rebuilds=3.0, ab=80.0, alternating_rebuilds=5.0)
    text = rollout.markdown(figures, {"A": 20_000, "B": 16_384}, ARGS, "", (1, 1, 1), (2, 2, 2), [])
    assert text.count("**missed**") == 5
