#!/usr/bin/env python3
"""Compare two ``summary.json`` files written by loadtest/run.sh (or show one).

    loadtest/compare.py loadtest/out/summary-svd.json loadtest/out/summary-softmax.json
    loadtest/compare.py --show loadtest/out/summary.json

For every endpoint in both runs, prints A's and B's p50/p95/p99 (ms), requests/s and
failures, then the ratios: ``B/A`` for latencies (how many times faster A answers) and
``A/B`` for requests/s (how many times more A served). Throughput ratios are meaningful when
the runs were not paced at the same rate, i.e. ``RATE=0`` (saturation); paced runs compare
latency at equal load. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LATENCY_KEYS = ("p50_ms", "p95_ms", "p99_ms")
__all__ = ["compare", "load_summary", "main", "ratio", "show"]


def load_summary(path: str | Path) -> dict[str, Any]:
    """A summary document; raises ValueError when it has no ``endpoints``."""
    document: dict[str, Any] = json.loads(Path(path).read_text())
    if not isinstance(document.get("endpoints"), dict):
        raise ValueError(f"{path}: not a loadtest summary (no 'endpoints')")
    return document


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def show(summary: dict[str, Any], label: str = "") -> str:
    """A table of one summary's endpoints."""
    config = summary.get("config", {})
    head = f"{label}mode={config.get('mode', '?')} rate={config.get('rate', '?')}/s "
    head += f"duration={_fmt(summary.get('duration_s'), 1)} s"
    lines = [head, f"{'endpoint':<10} {'p50':>8} {'p95':>8} {'p99':>8} {'req/s':>9} {'fail':>6}"]
    for name, e in summary["endpoints"].items():
        lines.append(
            f"{name:<10} {_fmt(e.get('p50_ms')):>8} {_fmt(e.get('p95_ms')):>8} "
            f"{_fmt(e.get('p99_ms')):>8} {_fmt(e.get('requests_per_s')):>9} "
            f"{e.get('failures', 0):>6}"
        )
    return "\n".join(lines)


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per common endpoint: latency ratios B/A and the throughput ratio A/B."""
    out: dict[str, dict[str, float | None]] = {}
    for name in a["endpoints"]:
        if name not in b["endpoints"]:
            continue
        ea, eb = a["endpoints"][name], b["endpoints"][name]
        row = {key: ratio(eb.get(key), ea.get(key)) for key in LATENCY_KEYS}
        row["requests_per_s"] = ratio(ea.get("requests_per_s"), eb.get("requests_per_s"))
        out[name] = row
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", action="store_true", help="print the summaries only")
    parser.add_argument("summaries", nargs="+", metavar="SUMMARY.json")
    args = parser.parse_args(argv)
    if not args.show and len(args.summaries) != 2:
        parser.error("give two summaries to compare (A.json B.json), or --show")
    try:
        docs = [load_summary(p) for p in args.summaries]
    except (OSError, ValueError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    for i, doc in enumerate(docs):
        print(show(doc, "" if args.show else f"{'AB'[i]}: "))
    if args.show:
        return 0
    print("\nratios (latency: B/A, x faster; throughput: A/B, x more)")
    print(f"{'endpoint':<10} {'p50':>8} {'p95':>8} {'p99':>8} {'req/s':>9}")
    for name, row in compare(docs[0], docs[1]).items():
        cells = [_fmt(row[key]) + "x" for key in (*LATENCY_KEYS, "requests_per_s")]
        print(f"{name:<10} {cells[0]:>8} {cells[1]:>8} {cells[2]:>8} {cells[3]:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
