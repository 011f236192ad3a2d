"""/rank latency across the load range, this checkout against a base revision in the same run.

    .venv/bin/python -m bench.e2e.loadrange --base main           # ~8 minutes
    .venv/bin/python -m bench.e2e.loadrange --base main --rounds 1 --seconds 15

The mixed load of docs/DESIGN.md §10 as the issue measured it (``bench.common.mixed``): Poisson
arrivals, 70% /rank of 2,048 candidates (8 unknown ids), top_k 50, 30% /ingest of 1–20
events, Zipf users over 2,000 of which 200 were seeded with 2,000 events each; one
`solar serve` and one `solar worker` (external applier) of each side on one private Redis.
Each side, fresh processes, runs the offered rates (30, 60, 100 requests/s) and then the
saturation rate (closed loop); the sides alternate round by round, so a busy machine hurts
both alike. Beside the client's percentiles, the server's own figures over each run come
from two scrapes of /metrics (``loadtest/server_metrics.py``): per-stage /rank p99, passes of
a new shape, GC pauses, event-loop lag, the worker's apply lag. Writes section
``loadrange`` of docs/BENCHMARKS.md, the plot docs/bench_load_range.png and the raw figures
docs/bench_load_range.json. The load generator runs on the same cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from bench.common import harness
from bench.common.markdown import write_section
from bench.common.mixed import MixedLoad, measure_mixed
from bench.e2e.ab import export
from loadtest.server_metrics import fetch, run_figures
from service.store.keys import APPLIERS_KEY

logger = logging.getLogger("bench.e2e.loadrange")
Row = dict[str, Any]
STAGES = ("decode", "lookup", "store", "queue", "pass", "handoff", "encode")


def _p99(figures: dict[str, dict[str, dict[str, Any]]], name: str, key: str = "all") -> Any:
    return figures.get(name, {}).get(key, {}).get("p99")


def _row(rate: float | None, result: Any, server: dict[str, Any], worker: dict[str, Any]) -> Row:
    gc = server.get("solar_gc_pause_seconds", {})
    done = max(1, len(result.rank_s) + len(result.ingest_s))
    cpu = {
        name: figures.get("process_cpu_seconds", {}).get("all", {}).get("seconds")
        for name, figures in (("serve", server), ("worker", worker))
    }
    shapes = server.get("solar_pass_seconds", {})
    return {
        "offered": rate,
        "rank_per_s": result.rank_per_s,
        "requests_per_s": result.requests_per_s,
        "rank_p50_ms": result.rank_ms(50),
        "rank_p99_ms": result.rank_ms(99),
        "rank_max_ms": 1_000.0 * max(result.rank_s, default=float("nan")),
        "ingest_p99_ms": result.ingest_ms(99),
        "failures": result.failures,
        "unsent": result.unsent,
        "apply_lag_p99_ms": _p99(worker, "solar_apply_lag_seconds"),
        "serve_cpu_ms": None if cpu["serve"] is None else 1_000.0 * cpu["serve"] / done,
        "worker_cpu_ms": None if cpu["worker"] is None else 1_000.0 * cpu["worker"] / done,
        "generator_cpu_ms": 1_000.0 * result.generator_cpu_s / done,
        "loop_lag_p99_ms": _p99(server, "solar_event_loop_lag_seconds"),
        "stage_p99_ms": {s: _p99(server, "solar_rank_stage_seconds", s) for s in STAGES},
        "gc_pauses": {g: (v["count"], v["p99"]) for g, v in sorted(gc.items())},
        "new_shape_passes": shapes.get("new", {}).get("count", 0),
        "new_shape_p99_ms": shapes.get("new", {}).get("p99"),
        "seen_shape_p99_ms": shapes.get("seen", {}).get("p99"),
    }


def one_side(
    tree: Path, model: Path, redis_url: str, load: MixedLoad, args: argparse.Namespace
) -> list[Row]:
    """The rates, then the saturation rate, against fresh processes of ``tree``."""
    env = {**args.env, "SOLAR_APPLIER": "external"}
    rows = []
    # The last side's worker is stopped: a base revision's worker did not remove its
    # heartbeat, which would hold this side's worker to half the partitions for 15 s.
    client = redis.Redis.from_url(redis_url)
    client.delete(APPLIERS_KEY)
    client.close()
    with (
        harness.service(model, redis_url, tree=tree, env=env) as base,
        harness.worker(model, redis_url, tree=tree, env=env) as worker_url,
    ):
        _drain(worker_url)  # the last side's saturation run may leave notices behind
        time.sleep(2.0)  # both started: let their start-up's last CPU settle
        for rate in [*args.rates, None]:
            before = fetch(f"{base}/metrics"), fetch(worker_url)
            result = measure_mixed(
                base,
                load,
                rate=rate,
                seconds=args.seconds if rate else args.saturation_seconds,
                concurrency=64 if rate else args.concurrency,
            )
            server = run_figures(before[0], fetch(f"{base}/metrics"))
            worker = run_figures(before[1], fetch(worker_url))
            rows.append(_row(rate, result, server, worker))
            logger.info("%s rate %s: %s", tree.name, rate, rows[-1])
    return rows


def _seed(model: Path, redis_url: str, users: list[str], args: argparse.Namespace) -> None:
    """The first ``--seed-users`` users get ``--events`` events each (the inline applier);
    waits until every partition is drained, so no side starts with a backlog."""
    items, kinds = harness.vocabulary(model), harness.actions(model)
    with harness.service(model, redis_url, env=args.env) as base:
        seeded = harness.seed_users(base, users[: args.seed_users], args.events, items, kinds=kinds)
        logger.info("seeded %d events in %.1f s", seeded.events, seeded.seconds)
        _drain(f"{base}/metrics")


def _drain(metrics_url: str, timeout_s: float = 180.0) -> None:
    """Wait (at most ``timeout_s``) until the applier behind ``metrics_url`` reports every
    partition drained, so no measurement starts with a backlog."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = gauge_sum(fetch(metrics_url), "solar_ingest_pending")
        if pending is not None and pending == 0:
            return
        time.sleep(0.5)


def gauge_sum(text: str, name: str) -> float | None:
    """The sum of gauge ``name``'s samples in a /metrics text; None when it has none."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    ]
    return sum(values) if values else None


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="main", help="git revision to compare against")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rates", type=float, nargs="+", default=[30.0, 60.0, 100.0])
    p.add_argument("--seconds", type=float, default=20.0, help="per offered rate and side")
    p.add_argument("--saturation-seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--seed-users", type=int, default=200)
    p.add_argument("--events", type=int, default=2_000)
    p.add_argument("--markdown", type=Path, default=Path("docs/BENCHMARKS.md"))
    p.add_argument("--plot", type=Path, default=Path("docs/bench_load_range.png"))
    p.add_argument("--json", type=Path, default=Path("docs/bench_load_range.json"))
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    args.env = {"SOLAR_LOG_CAP": str(max(16_384, args.events))}
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]
    results: dict[str, list[list[Row]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory(prefix="solar-loadrange-") as tmp:
        trees = {"base": export(args.base, Path(tmp) / "base"), "this": harness.REPO}
        model = harness.random_checkpoint(Path(tmp) / "model", n_items=10_000)
        users = [f"lr{u}" for u in range(args.users)]
        load = MixedLoad(users, harness.vocabulary(model), actions=harness.actions(model))
        with harness.redis_server() as redis_url, harness.postgres_history() as history_url:
            args.env["SOLAR_HISTORY_URL"] = history_url  # serve and worker share the history
            _seed(model, redis_url, users, args)
            for r in range(args.rounds):
                for side in ("base", "this") if r % 2 == 0 else ("this", "base"):
                    results[side].append(one_side(trees[side], model, redis_url, load, args))
    command = shlex.join([".venv/bin/python", "-m", "bench.e2e.loadrange", *raw])
    load_avg = (load_before, os.getloadavg()[0])
    document = {"command": command, "load_average": load_avg, "base": args.base, "results": results}
    args.json.write_text(json.dumps(document, indent=1) + "\n")
    plot(results, args)
    text = markdown(results, args, command, load_avg)
    print(text)
    write_section(args.markdown, "loadrange", text)
    return 0


def _median(rows: list[Row], key: str) -> float:
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else float("nan")


def _fmt(values: list[Any]) -> str:
    real = [v for v in values if v is not None]
    if not real:
        return "–"
    return f"{statistics.median(real):.1f}" + (
        " (" + ", ".join(f"{v:.1f}" for v in real) + ")" if len(real) > 1 else ""
    )


def markdown(
    results: dict[str, list[list[Row]]],
    args: argparse.Namespace,
    command: str,
    load_avg: tuple[float, float],
) -> str:
    lines = [
        f"## /rank across the load range against `{args.base}`, same run",
        "",
        f"Command: `{command}` ({os.cpu_count()} CPUs, shared; load average {load_avg[0]:.1f} "
        f"→ {load_avg[1]:.1f}). Poisson arrivals; 70% /rank (M = 2,048 with 8 unknown ids, "
        f"top_k 50), 30% /ingest (1–20 events); Zipf users over {args.users:,}, "
        f"{args.seed_users} seeded with {args.events:,} events; one `solar serve` + one "
        f"`solar worker` per side, fresh per round, {args.seconds:.0f} s per rate, "
        f"{args.saturation_seconds:.0f} s closed loop ({args.concurrency} clients) for "
        "saturation. Client latencies count from the scheduled arrival. Each cell: median "
        "over rounds (the rounds' values). Server columns: p99 from the service's histograms "
        "over the run (bucket-interpolated; – where that side has no such metric); CPU "
        "ms/req: the process's CPU over the run per completed request (rank and ingest), "
        "what a request costs whatever else runs on the machine (the load generator's: its "
        "own process, on the same cores).",
        "",
        "![p50 and p99 of /rank against the offered rate](bench_load_range.png)",
        "",
        "| side | offered req/s | rank/s | /rank p50 ms | /rank p99 ms | max ms | failures | "
        "apply lag p99 ms | serve CPU ms/req | worker CPU ms/req | generator CPU ms/req | "
        + " | ".join(f"{s} p99" for s in STAGES)
        + " | loop lag p99 |",
        "|" + " --- |" * (12 + len(STAGES)),
    ]
    for side, label in (("base", f"`{args.base}`"), ("this", "this branch")):
        rounds = results[side]
        for i in range(len(rounds[0]) if rounds else 0):
            rows = [rnd[i] for rnd in rounds]
            offered = rows[0]["offered"]
            cells = [
                label,
                "saturation" if offered is None else f"{offered:.0f}",
                _fmt([r["rank_per_s"] for r in rows]),
                _fmt([r["rank_p50_ms"] for r in rows]),
                _fmt([r["rank_p99_ms"] for r in rows]),
                _fmt([r["rank_max_ms"] for r in rows]),
                str(sum(r["failures"] for r in rows)),
                _fmt([r["apply_lag_p99_ms"] for r in rows]),
                _fmt([r["serve_cpu_ms"] for r in rows]),
                _fmt([r["worker_cpu_ms"] for r in rows]),
                _fmt([r["generator_cpu_ms"] for r in rows]),
                *(_fmt([r["stage_p99_ms"][s] for r in rows]) for s in STAGES),
                _fmt([r["loop_lag_p99_ms"] for r in rows]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    this = [row for rnd in results["this"] for row in rnd]
    gc_lines = sorted(
        {f"gen {g}: {c} pauses, p99 {p} ms" for r in this for g, (c, p) in r["gc_pauses"].items()}
    )
    new = sum(r["new_shape_passes"] for r in this)
    lines += [
        "",
        f"This branch, all runs: {new} passes met a padded shape for the first time "
        f"(p99 {_fmt([r['new_shape_p99_ms'] for r in this])} ms, against "
        f"{_fmt([r['seen_shape_p99_ms'] for r in this])} ms for seen shapes); GC: "
        + ("; ".join(gc_lines) if gc_lines else "no collection during the runs")
        + ".",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[list[Row]]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for side, colour in (("base", "tab:grey"), ("this", "tab:blue")):
        rounds = results[side]
        if not rounds:
            continue
        open_rows = [[r for r in rnd if r["offered"] is not None] for rnd in rounds]
        rates = [r["offered"] for r in open_rows[0]]
        for q, style in (("rank_p50_ms", "--"), ("rank_p99_ms", "-")):
            values = [_median([rnd[i] for rnd in open_rows], q) for i in range(len(rates))]
            label = f"{'this branch' if side == 'this' else args.base} {q[5:8]}"
            ax.plot(rates, values, style, marker="o", color=colour, label=label)
        sat = [rnd[-1] for rnd in rounds]
        ax.plot(
            [_median(sat, "requests_per_s")],
            [_median(sat, "rank_p99_ms")],
            "x",
            color=colour,
            markersize=10,
            label=f"{side} saturation p99",
        )
    ax.axhline(30, color="tab:red", linewidth=0.8, label="p99 target 30 ms")
    ax.set_xlabel("offered requests/s (Poisson; saturation at its achieved rate)")
    ax.set_ylabel("/rank latency, ms")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("/rank p50 and p99 across the load range (2 shared cores)")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
