"""The worker's cost per applied event under the mix's ingest traffic, against a base revision
in the same run (issue 22: the worker competes with serve for the two cores).

    .venv/bin/python -m bench.e2e.applier --base main
    .venv/bin/python -m bench.e2e.applier --base main --rounds 2 --rate 30 --seconds 15

One private Redis and one private PostgreSQL (the durable tier); per round and side a fresh
`solar serve` (``SOLAR_APPLIER=external``: it only stores and announces) and a fresh
`solar worker` of that side's tree, both sides alternating. The load is the mixed load's
/ingest share alone (``bench.common.mixed``: Poisson arrivals at ``--rate`` /ingest calls per
second, 1–20 events each over 2,000 Zipf users, so a call touches ~8 users and most blocks
are of 1–2 events). Per run it reads the worker's CPU (``/proc``) and its /metrics before and
after: events applied, user applies (blocks), store round trips by operation, apply lag.

The figures that matter: the worker's CPU ms per applied event and per block, and the apply
lag p99 (target ≤ 100 ms, docs/DESIGN.md §10).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import harness
from bench.common.markdown import write_section
from bench.common.mixed import MixedLoad, measure_mixed
from bench.e2e.ab import export
from bench.e2e.stalls import cpu_s, process_pid
from loadtest.server_metrics import fetch, run_figures


@dataclass(frozen=True)
class Run:
    """One side's figures of one round."""

    events: float  # applied
    blocks: float  # user applies that applied ≥ 1 event
    cpu_s: float  # worker CPU over the run
    round_trips: float  # store operations the worker made (solar_store_seconds count)
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    ops: dict[str, float]  # store operations by kind (solar_store_seconds{op} counts)

    @property
    def cpu_ms_per_event(self) -> float:
        return 1e3 * self.cpu_s / max(1.0, self.events)

    @property
    def cpu_ms_per_block(self) -> float:
        return 1e3 * self.cpu_s / max(1.0, self.blocks)


def _sum(text: str, name: str) -> float:
    """The sum over label sets of the sample ``name`` in a /metrics text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _ops(text: str) -> dict[str, float]:
    """solar_store_seconds counts by op in a /metrics text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith('solar_store_seconds_count{op="'):
            op = line.split('"')[1]
            out[op] = out.get(op, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def one_side(
    tree: Path, model: Path, redis_url: str, load: MixedLoad, args: argparse.Namespace
) -> Run:
    env = {"SOLAR_APPLIER": "external", **args.env}
    with (
        harness.service(model, redis_url, tree=tree, env=env) as base,
        harness.worker(model, redis_url, tree=tree, env=env) as worker_url,
    ):
        pid = process_pid("service.cli worker", str(model))  # the only worker of this model
        before, cpu0 = fetch(worker_url), cpu_s(pid)
        measure_mixed(base, load, rate=args.rate, seconds=args.seconds, seed=args.seed)
        time.sleep(1.0)  # the last notices are applied (lag ≪ 1 s)
        after, cpu1 = fetch(worker_url), cpu_s(pid)
    lag = run_figures(before, after).get("solar_apply_lag_seconds", {}).get("all", {})

    def delta(name: str) -> float:
        return _sum(after, name) - _sum(before, name)

    return Run(
        events=delta("solar_apply_batch_events_sum"),
        blocks=delta("solar_apply_batch_events_count"),
        cpu_s=cpu1 - cpu0,
        round_trips=delta("solar_store_seconds_count"),
        lag_p50_ms=lag.get("p50"),
        lag_p99_ms=lag.get("p99"),
        ops={op: n - _ops(before).get(op, 0.0) for op, n in _ops(after).items()},
    )


def _med(values: Sequence[float | None]) -> str:
    real = [v for v in values if v is not None]
    if not real:
        return "–"
    spread = " (" + ", ".join(f"{v:.2f}" for v in real) + ")" if len(real) > 1 else ""
    return f"{statistics.median(real):.2f}{spread}"


def markdown(
    runs: dict[str, list[Run]], args: argparse.Namespace, command: str, load: tuple[float, float]
) -> str:
    lines = [
        f"## The worker's cost per applied event against `{args.base}`, same run",
        "",
        f"Command: `{command}` ({os.cpu_count()} CPUs, shared with other jobs; load average "
        f"{load[0]:.1f} → {load[1]:.1f}). The mix's /ingest share alone at {args.rate:g} calls/s "
        f"(Poisson; 1–20 events each over {args.users:,} Zipf users), {args.seconds:g} s per "
        "run; one `solar serve` (external applier) + one `solar worker` per side, alternating; "
        "median (runs).",
        "",
        "| side | events applied | blocks | worker CPU ms / event | CPU ms / block | "
        "store round trips / block | apply lag p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for side, label in (("base", f"`{args.base}`"), ("this", "this branch")):
        rs = runs[side]
        lines.append(
            f"| {label} | {_med([r.events for r in rs])} | {_med([r.blocks for r in rs])} | "
            f"{_med([r.cpu_ms_per_event for r in rs])} | "
            f"{_med([r.cpu_ms_per_block for r in rs])} | "
            f"{_med([r.round_trips / max(1.0, r.blocks) for r in rs])} | "
            f"{_med([r.lag_p50_ms for r in rs])} | {_med([r.lag_p99_ms for r in rs])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="main", help="git revision measured in the same run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rate", type=float, default=30.0, help="/ingest calls per second")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env", nargs="*", default=[], help="SOLAR_*=VALUE for both sides")
    p.add_argument("--markdown", type=Path, default=None, help="write section `applier` here")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    args.env = dict(e.split("=", 1) for e in args.env)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]
    runs: dict[str, list[Run]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory(prefix="solar-applier-") as tmp:
        trees = {"base": export(args.base, Path(tmp) / "base"), "this": harness.REPO}
        model = harness.random_checkpoint(Path(tmp) / "model", n_items=10_000)
        with harness.postgres_history() as history_url:
            args.env["SOLAR_HISTORY_URL"] = history_url
            for r in range(args.rounds):
                for side in ("base", "this") if r % 2 == 0 else ("this", "base"):
                    # A fresh Redis and new users per run: a stopped worker stays "live" for
                    # 3 leases, which would halve the next one's share of the partitions.
                    users = [f"ap{r}{side}{u}" for u in range(args.users)]
                    load = MixedLoad(
                        users,
                        harness.vocabulary(model),
                        rank_share=0.0,
                        actions=harness.actions(model),
                    )
                    with harness.redis_server() as redis_url:
                        run = one_side(trees[side], model, redis_url, load, args)
                    runs[side].append(run)
                    print(f"round {r} {side}: {run}", flush=True)
    command = shlex.join([".venv/bin/python", "-m", "bench.e2e.applier", *raw])
    text = markdown(runs, args, command, (load_before, os.getloadavg()[0]))
    print(text)
    if args.markdown is not None:
        write_section(args.markdown, "applier", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
