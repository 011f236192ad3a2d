"""Lifelong quality study: each row's own model, trained to convergence, tested, and its
serving cost, on every dataset and seed; writes docs/RESULTS.md, docs/results.json (rows and
paired differences with 95% CIs) and docs/quality_vs_cost.png.

    python -m bench.quality --workers 2                   # the committed protocol (full size)
    python -m bench.quality --users 1000 --eval-users 1000 --out docs/quality-reduced
    python -m bench.quality --quick                       # smoke run (tiny, 1 seed)
    python -m bench.quality --datasets path/to/log.csv --columns user=u,item=i,ts=t
    python -m bench.quality --datasets ml-100k --rows svd softmax@200 --seeds 0

Rows are declared in ROWS (adding one is one line: label, mode, context, overrides); each
row trains its own model in its mode on its context (None = the whole history; training
capped at the dataset's ``train_len``, testing on the whole history). Runs are independent
processes with one torch thread each, ``--workers`` at a time.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from bench.common.markdown import replace_section, sections
from bench.quality import journal
from bench.quality.doc import doc_header, document, plot
from bench.quality.results import dataset_results
from bench.quality.run import RunResult, Skipped, run_one
from bench.quality.setup import DatasetSettings, Job, Row
from model.datasets import columns_argument
from model.lifelong import LifelongConfig

REPO = Path(__file__).resolve().parents[2]

LIFELONG_ROW = "lifelong+rep"  # the row the targets are about (results.json's "lifelong_row")
# `make model`'s configuration: LIFELONG_ROW with 1,792 count buckets a row instead of 2,048,
# so that a user's Redis keys stay within 64 KiB (docs/TRAINING.md, "The default model").
DEFAULT_MODEL_ROW = "lifelong+rep1792"
ROWS: tuple[Row, ...] = (
    Row("lifelong", "lifelong", None, {"recent_tokens": 32}),
    Row("lifelong@64", "lifelong", None, {"recent_tokens": 64}),
    # time-aware long-term channel: the factors decay with a 30-day half-life
    Row("lifelong+hl30d", "lifelong", None, {"recent_tokens": 32, "half_life_s": 30 * 86_400.0}),
    Row("lifelong@64+hl30d", "lifelong", None, {"recent_tokens": 64, "half_life_s": 30 * 86_400.0}),
    # the repeat channel: the candidate's own count over the whole history (hashed, 2×2,048)
    Row(LIFELONG_ROW, "lifelong", None, {"recent_tokens": 32, "repeat_buckets": 2_048}),
    # fewer buckets (2×1,792): the state in jemalloc's 28 KiB class, a user within 64 KiB of
    # Redis; the default model's row (DEFAULT_MODEL_ROW)
    Row(DEFAULT_MODEL_ROW, "lifelong", None, {"recent_tokens": 32, "repeat_buckets": 1_792}),
    Row(
        "lifelong+rep+hl30d",
        "lifelong",
        None,
        {"recent_tokens": 32, "repeat_buckets": 2_048, "half_life_s": 30 * 86_400.0},
    ),
    Row("svd", "svd"),
    Row("svd+recent16", "svd", None, {"recent_tokens": 16}),
    Row("elastic", "elastic"),
    Row("linear", "linear"),
    Row("mean", "mean"),
    Row("softmax@50", "softmax", 50),
    Row("softmax@200", "softmax", 200),
    Row("softmax@all", "softmax"),
)
# Early stopping on validation GAUC of 1,000 users, smoothed (EMA α = 0.6), with a patience
# of 320 optimiser steps (8 validations) after the best: one noisy validation neither stops a
# run nor picks its weights. max_steps is only a safety ceiling (a run that reaches it is
# flagged "⚠ceiling"). Fields the trainer lacks are dropped with a warning.
TRAIN = {
    "epochs": 100,
    "batch_size": 48,
    "lr": 3e-3,
    "negatives": 127,
    "eval_every": 40,
    "patience_steps": 320,
    "val_smoothing": 0.6,
    "val_users": 1_000,
    "val_negatives": 100,
    "max_steps": 4_000,
}
# Every eligible user tested (paired across rows: same users, same negatives).
SETTINGS: dict[str, DatasetSettings] = {
    "ml-100k": DatasetSettings(train_len=200, train=TRAIN, eval_users=300),
    "ml-1m": DatasetSettings(train_len=200, train=TRAIN),
    "synthetic-lifelong": DatasetSettings(
        users=None,
        train_len=200,
        train=TRAIN,
        eval_negatives=1_000,
        lifelong=LifelongConfig(n_users=80, min_length=1_000, max_length=10_000),
    ),
    "complete-journey": DatasetSettings(train_len=1_000, train=TRAIN, eval_negatives=1_000),
}
DEFAULT_DATASETS = ("ml-1m", "synthetic-lifelong", "complete-journey")  # the three
# A log file given by path: a user sample with the longest users, sampled test negatives.
FILE = DatasetSettings(
    users=1_000, long_users=100, train_len=1_000, train=TRAIN, eval_negatives=1_000, eval_users=500
)
QUICK_TRAIN = {**TRAIN, "max_steps": 4, "eval_every": 2, "batch_size": 16, "val_users": 16}
QUICK = DatasetSettings(
    users=16,
    long_users=4,
    train_len=64,
    train=QUICK_TRAIN,
    eval_negatives=64,
    eval_users=16,
    lifelong=LifelongConfig(n_users=16, min_length=40, max_length=300),
    cost_budget_s=0.02,
)


def settings_for(
    name: str,
    quick: bool,
    train: Mapping[str, Any] | None = None,
    users: int | None = None,
    eval_users: int | None = None,
) -> DatasetSettings:
    """The dataset's settings (QUICK's sizes for every dataset with ``--quick``), with the
    ``train`` fields (``--set``) on top of its TrainConfig fields; ``users`` / ``eval_users``
    (``--users`` / ``--eval-users``) cap the user sample and the test users (a reduced run)."""
    s = SETTINGS.get(name, FILE)
    if quick:
        negatives = None if name.startswith("ml-") else QUICK.eval_negatives
        s = dataclasses.replace(QUICK, eval_negatives=negatives)
    if users is not None and (s.users is None or s.users > users):
        s = dataclasses.replace(s, users=users, long_users=min(s.long_users or users // 10, users))
    if eval_users is not None and (s.eval_users is None or s.eval_users > eval_users):
        s = dataclasses.replace(s, eval_users=eval_users)
    return dataclasses.replace(s, train={**s.train, **train}) if train else s


def _assignment(text: str) -> tuple[str, Any]:
    """argparse ``type=`` of ``--set``: [DATASET:]KEY=VALUE with VALUE a Python literal (a
    DATASET prefix limits the field to that dataset's runs)."""
    key, sep, value = text.partition("=")
    field = key.rpartition(":")[2]
    if not sep or not field.isidentifier():
        raise argparse.ArgumentTypeError(f"expected [DATASET:]KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError) as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a Python literal") from exc


def train_fields(name: str, assignments: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The ``--set`` fields of dataset ``name``: the unprefixed ones, then those prefixed
    ``name:`` (which win)."""
    shared = {key: value for key, value in assignments if ":" not in key}
    own = {
        key.rpartition(":")[2]: value
        for key, value in assignments
        if key.rpartition(":")[0] == name
    }
    return {**shared, **own}


def _dataset_settings(args: argparse.Namespace) -> dict[str, DatasetSettings]:
    """Each dataset's settings under the command line (``--quick``, ``--set``, the caps)."""
    return {
        name: settings_for(
            name, args.quick, train_fields(name, args.set), args.users, args.eval_users
        )
        for name in args.datasets
    }


def _jobs(
    args: argparse.Namespace, rows: Sequence[Row], settings: Mapping[str, DatasetSettings]
) -> list[Job]:
    """Every (dataset, row, seed), the costliest rows (long softmax contexts) first."""
    code = journal.code_version(REPO) if args.journal else ""
    jobs = [
        Job(
            name,
            dataset_settings,
            row,
            seed,
            args.columns,
            args.sort,
            str(args.data_dir),
            code,
        )
        for name, dataset_settings in settings.items()
        for row in rows
        for seed in args.seeds
    ]
    return sorted(jobs, key=lambda j: (j.row.mode != "softmax", -(j.row.context or 10**9)))


def _run(jobs: list[Job], workers: int) -> Iterator[tuple[Job, RunResult | Skipped]]:
    """(job, result) of every job, as each finishes."""
    if workers <= 1:
        for job in jobs:
            yield job, run_one(job)
        return
    with ProcessPoolExecutor(workers) as pool:
        futures = {pool.submit(run_one, job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _select(labels: Iterable[str] | None) -> list[Row]:
    if labels is None:
        return list(ROWS)
    known = {r.label: r for r in ROWS}
    unknown = sorted(set(labels) - set(known))
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; rows: {', '.join(known)}")
    return [known[label] for label in labels]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--datasets", nargs="+", default=list(DEFAULT_DATASETS), help="names or log paths"
    )
    p.add_argument("--rows", nargs="+", default=None, help="row labels (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (quick: 0)")
    p.add_argument("--workers", type=int, default=2, help="processes (1: in this process)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run, one seed")
    p.add_argument("--columns", type=columns_argument, default=None, help="a log's columns")
    p.add_argument("--sort", action="store_true", help="sort a log file's events by time")
    p.add_argument(
        "--set",
        nargs="+",
        type=_assignment,
        default=[],
        metavar="KEY=VALUE",
        help="TrainConfig fields of every run, e.g. max_steps=300 negatives=127; "
        "DATASET:KEY=VALUE for one dataset's runs (ml-1m:max_steps=6000)",
    )
    p.add_argument("--users", type=int, default=None, help="cap the user sample (reduced run)")
    p.add_argument("--eval-users", type=int, default=None, help="cap the test users")
    p.add_argument("--data-dir", type=Path, default=REPO / "data")
    p.add_argument("--out", type=Path, default=REPO / "docs")
    p.add_argument(
        "--journal",
        type=Path,
        default=None,
        help="append each finished run to this file and reuse the runs it already holds for "
        "identical jobs (resume an interrupted study)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study and write ``--out``/RESULTS.md, results.json and quality_vs_cost.png."""
    args = _parser().parse_args(argv)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    rows = _select(args.rows)
    start = time.perf_counter()
    runs: list[RunResult] = []
    skipped: list[Skipped] = []
    names = _dataset_settings(args)
    jobs = _jobs(args, rows, names)
    labels = [r.label for r in rows]
    order = {key: i for i, key in enumerate(itertools.product(args.datasets, labels))}
    done = journal.recorded(args.journal) if args.journal else []
    reused = [(job, out) for job, out in done if job in jobs]
    if reused:
        print(f"{len(reused)} run(s) reused from {args.journal}", flush=True)
    reused_jobs = [job for job, _ in reused]
    todo = [job for job in jobs if job not in reused_jobs]
    for job, out in itertools.chain(reused, _run(todo, args.workers)):
        if args.journal and job not in reused_jobs:
            journal.append(args.journal, job, out)
        if isinstance(out, Skipped):
            print(f"{out.dataset:20s} {out.label:14s} skipped: {out.reason}", flush=True)
            if out not in skipped:
                skipped.append(out)
            continue
        runs.append(out)
        print(
            f"{out.dataset:20s} {out.label:14s} seed {out.seed} GAUC {out.metrics['GAUC']:.4f} "
            f"steps {out.steps} ({out.best}) {out.us_per_request:,.0f} µs "
            f"{out.contexts_per_s:,.0f} ctx/s ({out.wall_s:.0f}s)",
            flush=True,
        )
    # runs finish in any order: document them in the order of datasets, rows and seeds
    runs.sort(key=lambda r: (order.get((r.dataset, r.label), len(order)), r.seed))
    wall = time.perf_counter() - start
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    reused_s = sum(out.wall_s for _, out in reused if isinstance(out, RunResult))
    header = doc_header(
        f"python -m bench.quality {shown}", wall, args.workers, len(reused), reused_s
    )
    if (
        args.quick
        or args.users
        or args.eval_users
        or args.set
        or args.rows
        or args.seeds != [0, 1, 2]
    ):
        header.insert(
            0,
            "- **Reduced run** (fewer users, rows, seeds or steps than the committed "
            "protocol `python -m bench.quality --workers 2`): not the published figures",
        )
    results = {
        "datasets": {
            name: dataset_results(rows, [r for r in runs if r.dataset == name], LIFELONG_ROW)
            for name in names
        }
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, runs, args.out / "quality_vs_cost.png")
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    path = args.out / "RESULTS.md"
    text = document(rows, runs, skipped, names, header, results["datasets"])
    # Sections other tools write into the document (bench.quality.references) stay.
    for name, body in sections(path.read_text() if path.is_file() else "").items():
        text = replace_section(text, name, body)
    path.write_text(text)
    print(f"wrote {args.out / 'RESULTS.md'} in {wall:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
