#!/usr/bin/env python3
"""Helpers of loadtest/prometheus_check.sh: adapt docker/prometheus.yml, query Prometheus.

    promql.py adapt docker/prometheus.yml OUT.yml solar-1:8000=127.0.0.1:8101 ...
    promql.py rules docker/grafana/dashboards/solar.json OUT-rules.yml
    promql.py check http://127.0.0.1:9090 --replicas 2

``adapt`` rewrites the compose targets to loopback ones (every target must be mapped) and
scrapes every second; ``rules`` turns the dashboard's PromQL into a rules file so that
``promtool check rules`` validates every expression; ``check`` waits until all replicas are
up and ``/rank``'s p99 (histogram_quantile over solar_request_duration_seconds_bucket) is a
finite number, prints it and exits 0, else exits 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

P99_RANK = (
    "histogram_quantile(0.99, sum by (le) "
    '(rate(solar_request_duration_seconds_bucket{route="/rank"}[1m])))'
)
__all__ = ["P99_RANK", "adapt_config", "dashboard_exprs", "instant_query", "main"]


def adapt_config(config: dict[str, Any], mapping: dict[str, str], interval: str = "1s") -> None:
    """Rewrite ``static_configs`` targets in place through ``mapping``; all must be mapped."""
    config.setdefault("global", {})["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            unknown = [t for t in static["targets"] if t not in mapping]
            if unknown:
                raise KeyError(f"no loopback address for targets {unknown}")
            static["targets"] = [mapping[t] for t in static["targets"]]


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression of a Grafana dashboard (panels and nested rows)."""
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield str(target["expr"])


def _rules_document(exprs: Sequence[str]) -> dict[str, Any]:
    # Grafana's $__rate_interval is not PromQL: stand in a fixed window for validation.
    rules = [
        {"record": f"solar:dashboard_expr_{i}", "expr": e.replace("$__rate_interval", "1m")}
        for i, e in enumerate(exprs)
    ]
    return {"groups": [{"name": "solar-dashboard", "rules": rules}]}


def instant_query(base_url: str, query: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """``GET /api/v1/query`` → the result vector; raises RuntimeError on an error status."""
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"query {query!r} failed: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _scalar(result: list[dict[str, Any]]) -> float:
    return float(result[0]["value"][1]) if result else math.nan


def check(base_url: str, replicas: int, timeout_s: float) -> int:
    """Wait for ``replicas`` targets up and a finite /rank p99; print it; 0 on success."""
    deadline = time.monotonic() + timeout_s
    up = p99 = math.nan
    while time.monotonic() < deadline:
        try:
            up = _scalar(instant_query(base_url, 'sum(up{job="solar"})'))
            p99 = _scalar(instant_query(base_url, P99_RANK))
            per_replica = instant_query(
                base_url, 'sum by (instance) (solar_request_duration_seconds_count{route="/rank"})'
            )
        except (OSError, RuntimeError, ValueError) as exc:
            print(f"prometheus not answering yet: {exc}", file=sys.stderr)
        else:
            served = {r["metric"].get("instance"): float(r["value"][1]) for r in per_replica}
            if up == replicas and math.isfinite(p99) and len(served) == replicas:
                print(f"prometheus: {replicas} replicas up, /rank requests per replica {served}")
                print(f"prometheus: p99(/rank) = {p99 * 1000:.2f} ms")
                return 0
        time.sleep(1.0)
    print(f"prometheus check FAILED: up={up}, p99(/rank)={p99}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("adapt", help="compose prometheus.yml → loopback targets")
    a.add_argument("source")
    a.add_argument("out")
    a.add_argument("mapping", nargs="+", metavar="TARGET=HOST:PORT")
    r = sub.add_parser("rules", help="dashboard JSON → rules file for promtool")
    r.add_argument("dashboard")
    r.add_argument("out")
    c = sub.add_parser("check", help="query the p99 of /rank")
    c.add_argument("url")
    c.add_argument("--replicas", type=int, default=2)
    c.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.command == "adapt":
        config = yaml.safe_load(Path(args.source).read_text())
        adapt_config(config, dict(m.split("=", 1) for m in args.mapping))
        Path(args.out).write_text(yaml.safe_dump(config, sort_keys=False))
        return 0
    if args.command == "rules":
        exprs = list(dashboard_exprs(json.loads(Path(args.dashboard).read_text())))
        Path(args.out).write_text(yaml.safe_dump(_rules_document(exprs), sort_keys=False))
        print(f"{len(exprs)} dashboard expressions")
        return 0
    return check(args.url, args.replicas, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
