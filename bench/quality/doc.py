"""docs/RESULTS.md and docs/quality_vs_cost.png from the runs of the quality study.

Every number comes from the :class:`RunResult` list of one run of ``python -m bench.quality``:
quality as mean ± std over seeds, cost and training speed as the median over seeds.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from bench.quality.results import paired_table, target_lines
from bench.quality.run import RunResult, Skipped
from bench.quality.setup import DatasetSettings, Row
from model.config import RankerConfig

METRICS = ("AUC", "GAUC", "LogLoss", "HR@10", "NDCG@10")
TARGET_DATASETS = ("ml-1m", "synthetic-lifelong")
MARGIN, COST_RATIO = 0.005, 20.0


class Summary(NamedTuple):
    """One row of a table: metric → (mean, std) over seeds, and the medians of the rest."""

    row: Row
    stats: dict[str, tuple[float, float]]
    runs: list[RunResult]

    def median(self, field: str) -> float:
        return float(np.median([getattr(r, field) for r in self.runs]))


def summarise(rows: Sequence[Row], runs: Sequence[RunResult]) -> dict[str, Summary]:
    """label → Summary of the rows that have runs (in ``rows`` order)."""
    out: dict[str, Summary] = {}
    for row in rows:
        mine = [r for r in runs if r.label == row.label]
        if mine:
            stats = {
                k: (
                    float(np.mean([r.metrics[k] for r in mine])),
                    float(np.std([r.metrics[k] for r in mine])),
                )
                for k in METRICS
            }
            out[row.label] = Summary(row, stats, mine)
    return out


def table(summaries: Mapping[str, Summary]) -> list[str]:
    """The Markdown table of one dataset."""
    head = [
        "row",
        "context train/eval",
        *METRICS,
        "µs/request",
        "state bytes",
        "contexts/s",
        "steps (best)",
        "wall s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for label, s in summaries.items():
        run = s.runs[0]
        stopped = "" if all(r.converged for r in s.runs) else " ⚠ceiling"
        cells = [
            f"`{label}`",
            f"{run.train_len:,}/{run.eval_len:,}",
            *(f"{m:.4f} ± {sd:.4f}" for m, sd in s.stats.values()),
            _number(s.median("us_per_request")),
            _number(s.median("state_bytes")),
            f"{s.median('contexts_per_s'):,.0f}",
            f"{int(s.median('steps')):,} ({int(s.median('best')):,}){stopped}",
            f"{s.median('wall_s'):,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _number(value: float) -> str:
    """An integer with thousands separators; n/a for NaN or 0 (a mode with no cost call)."""
    return "n/a" if math.isnan(value) or value == 0 else f"{value:,.0f}"


def _verdict(ok: bool | None) -> str:
    return "not evaluated" if ok is None else ("**met**" if ok else "**missed**")


def targets(summaries: Mapping[str, Summary]) -> list[str]:
    """The issue's four targets, computed from the table (None where a row is missing)."""

    def gauc(label: str) -> float | None:
        s = summaries.get(label)
        return None if s is None else s.stats["GAUC"][0]

    def us(label: str) -> float | None:
        s = summaries.get(label)
        value = None if s is None else s.median("us_per_request")
        return None if value is None or math.isnan(value) else value

    svd, w200, whole = gauc("svd"), gauc("softmax@200"), gauc("softmax@all")
    lines = []
    if svd is None:
        return ["- targets: not evaluated (no `svd` row)"]
    if w200 is not None:
        d = svd - w200
        lines.append(
            f"- `svd` ≥ `softmax@200` + {MARGIN} GAUC: {_verdict(d >= MARGIN)} "
            f"(svd − softmax@200 = {d:+.4f})"
        )
    if whole is not None:
        d = whole - svd
        lines.append(
            f"- `svd` within {MARGIN} GAUC of `softmax@all`: {_verdict(d <= MARGIN)} "
            f"(softmax@all − svd = {d:+.4f})"
        )
    others = {k: gauc(k) for k in ("mean", "linear")}
    diffs = {k: svd - v for k, v in others.items() if v is not None}
    if diffs:
        ok = all(d >= MARGIN for d in diffs.values())
        text = ", ".join(f"svd − {k} = {d:+.4f}" for k, d in diffs.items())
        lines.append(
            f"- `svd` above `mean` and `linear` by ≥ {MARGIN} GAUC: {_verdict(ok)} ({text})"
        )
    ref, own = us("softmax@all"), us("svd")
    if ref is not None and own is not None:
        ratio = ref / max(own, 1e-9)
        lines.append(
            f"- `svd` serving ≥ {COST_RATIO:.0f}× cheaper than `softmax@all`: "
            f"{_verdict(ratio >= COST_RATIO)} ({ref:,.0f} / {own:,.0f} µs = {ratio:.1f}×)"
        )
    return lines


def doc_header(
    command: str, wall_s: float, workers: int, reused: int = 0, reused_run_s: float = 0.0
) -> list[str]:
    """The document's opening lines: command, wall time, machine, protocol, columns.

    ``reused`` runs came from the journal (``--journal``): their ``reused_run_s`` (the sum of
    their own wall times) is stated beside this invocation's wall time."""
    model = RankerConfig(n_items=2)
    wall = f"- Wall time: {wall_s / 60:.1f} min with {workers} worker process(es)"
    if reused:
        wall += (
            f" for this invocation, which reused {reused} run(s) from its journal; those took "
            f"{reused_run_s / 60:.1f} min of run time (the sum over runs: about "
            f"{reused_run_s / 60 / max(workers, 1):.0f} min of wall time with {workers} workers)"
        )
    return [
        f"- Command: `{command}` (after `make data`)",
        wall,
        f"- Machine: {platform.platform()}, {os.cpu_count()} CPU cores (shared with other "
        f"jobs), torch {torch.__version__}, one torch thread per run",
        "- Every run: its row's mode, AdamW, BCE on the next item + sampled negatives, early "
        "stopping on validation GAUC (each user's second-to-last event), best weights kept; "
        "test = each user's last event (leave-last-out); quality is the mean ± std over "
        f"seeds, the other columns the median. d={model.dim}, heads={model.heads}, "
        f"r={model.rank}, elastic k={model.elastic_tokens}, no recency decay unless a row "
        "overrides it.",
        "- Columns: context = events of history in training / test; µs/request = one user "
        "(B=1) scoring M=2,048 candidates, one thread, CPU clock, median of repeats; state "
        "bytes = what the mode keeps per user (`bench/quality/cost.py`); contexts/s = "
        "training targets per second (optimiser steps only where the trainer reports it, "
        "else over the training wall time); steps (best) = optimiser steps run (and the "
        "step, or epoch for a trainer without ``eval_every``, of the kept weights); "
        "⚠ceiling = a run stopped by max_steps / epochs, not by early stopping.",
    ]


def _sample(s: DatasetSettings) -> str:
    if s.users is None:
        return "Users: all"
    return f"Users: a sample of {s.users:,} (the {s.long_users:,} longest always included)"


def _train_len(s: DatasetSettings) -> str:
    if s.train_len is None:
        return "train on the whole history"
    return f"train on the last {s.train_len:,} events (a cap for training speed)"


def document(
    rows: Sequence[Row],
    runs: Sequence[RunResult],
    skipped: Sequence[Skipped],
    settings: Mapping[str, DatasetSettings],
    header: Sequence[str],
    results: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The whole Markdown document; ``header`` lines (command, machine, wall) come first;
    ``results`` (results.json's datasets) adds each dataset's paired differences and the
    lifelong row's targets."""
    parts = [
        "# Offline quality results",
        "",
        "Generated by `python -m bench.quality`; do not edit by hand.",
        "",
        *header,
        "",
    ]
    for name, s in settings.items():
        mine = [r for r in runs if r.dataset == name]
        summaries = summarise(rows, mine)
        parts += [f"## {name}", ""]
        seeds = sorted({r.seed for r in mine})
        parts.append(
            f"{_sample(s)}; training {dict(s.train)}; whole-history rows "
            f"{_train_len(s)} and are tested on the whole history; test negatives: "
            f"{s.eval_negatives or 'whole catalogue minus seen items'}; test users: "
            f"{s.eval_users or 'all'}; seeds {', '.join(map(str, seeds))}."
        )
        parts += ["", *table(summaries), ""]
        capped = sum(not r.converged for r in mine)
        if capped:
            parts.append(
                f"- ⚠ {capped} of {len(mine)} runs stopped at a step / epoch ceiling "
                "before early stopping: these figures are not converged."
            )
        for skip in skipped:
            if skip.dataset == name:
                parts.append(f"- `{skip.label}` not run: {skip.reason}.")
        entry = (results or {}).get(name)
        if entry is not None:
            parts += [
                "",
                "Paired differences of GAUC (same test users and negatives for every row; "
                "impression-weighted mean over users, pooled over seeds; 95% CI: bootstrap "
                "over users):",
                "",
                *paired_table(entry),
                "",
                "Targets of the lifelong row:",
                "",
                *target_lines(entry),
            ]
        when = "" if name in TARGET_DATASETS else " (the issue sets them for ml-1m and "
        when += "" if name in TARGET_DATASETS else "synthetic-lifelong; shown for reference)"
        parts += ["", f"Targets of the `svd` row{when}:", "", *targets(summaries), ""]
    parts += ["![GAUC vs serving cost](quality_vs_cost.png)", ""]
    return "\n".join(parts)


def plot(rows: Sequence[Row], runs: Sequence[RunResult], path: Path) -> None:
    """GAUC (mean ± std over seeds) against µs per request (log x), one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r.dataset for r in runs))
    fig, axes = plt.subplots(
        1, max(len(names), 1), figsize=(5 * max(len(names), 1), 4), squeeze=False
    )
    for axis, name in zip(axes[0], names, strict=False):
        for label, s in summarise(rows, [r for r in runs if r.dataset == name]).items():
            mean, std = s.stats["GAUC"]
            if math.isnan(s.median("us_per_request")):
                continue
            axis.errorbar(s.median("us_per_request"), mean, yerr=std, fmt="o", capsize=3)
            axis.annotate(
                label,
                (s.median("us_per_request"), mean),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        axis.set(
            xscale="log",
            xlabel="µs per request (M=2,048, one thread)",
            ylabel="test GAUC",
            title=name,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
