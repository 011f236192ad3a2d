"""docs/results.json and the paired-difference tables and targets of docs/RESULTS.md.

The JSON, per dataset::

    {"lifelong_row": LABEL,
     "rows": {LABEL: {"gauc_mean", "gauc": [per seed], "auc_mean", "ndcg10_mean",
                      "us_per_request", "state_bytes", "contexts_per_s", "seeds"}},
     "paired": {"A - B": {"mean", "ci95": [lo, hi], "users"}}}

"paired" holds every row against every softmax row, and the lifelong row against every
other row (:mod:`bench.quality.paired`: same users, same negatives, bootstrap over users).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.quality.paired import Paired, paired_difference
from bench.quality.run import RunResult
from bench.quality.setup import Row

MARGIN = 0.005  # GAUC points the lifelong row must win by (the targets)
TARGET_ROWS = ("softmax@50", "softmax@200", "mean", "linear", "elastic")
CI_ROWS = ("softmax@50", "softmax@200")  # where the paired 95% CI must also be above 0
COST_ROW = "softmax@200"  # the lifelong row may cost no more µs per request than this


def _by_label(runs: Sequence[RunResult]) -> dict[str, dict[int, RunResult]]:
    out: dict[str, dict[int, RunResult]] = {}
    for run in runs:
        out.setdefault(run.label, {})[run.seed] = run
    return out


def pairs(rows: Sequence[Row], lifelong: str | None) -> list[tuple[str, str]]:
    """(a, b) label pairs compared: each row − each softmax row, the lifelong row − each."""
    softmax = [r.label for r in rows if r.mode == "softmax"]
    out = [(r.label, s) for r in rows for s in softmax if r.label != s]
    if lifelong is not None:
        out += [(lifelong, r.label) for r in rows if r.label != lifelong]
    return list(dict.fromkeys(out))


def compare(runs: Sequence[RunResult], a: str, b: str) -> Paired | None:
    """a − b over the seeds both ran (None: a row without runs or no common seed)."""
    mine = _by_label(runs)
    seeds = sorted(set(mine.get(a, {})) & set(mine.get(b, {})))
    if not seeds:
        return None
    return paired_difference(
        [mine[a][s].per_user for s in seeds], [mine[b][s].per_user for s in seeds]
    )


def _median(values: Sequence[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.median(finite)) if finite else None


def dataset_results(
    rows: Sequence[Row], runs: Sequence[RunResult], lifelong: str | None
) -> dict[str, Any]:
    """One dataset's entry of results.json (``runs`` of that dataset only)."""
    table: dict[str, Any] = {}
    for label, by_seed in _by_label(runs).items():
        done = [by_seed[s] for s in sorted(by_seed)]
        table[label] = {
            "gauc_mean": float(np.mean([r.metrics["GAUC"] for r in done])),
            "gauc": [r.metrics["GAUC"] for r in done],
            "auc_mean": float(np.mean([r.metrics["AUC"] for r in done])),
            "ndcg10_mean": float(np.mean([r.metrics["NDCG@10"] for r in done])),
            "us_per_request": _median([r.us_per_request for r in done]),
            "state_bytes": int(np.median([r.state_bytes for r in done])),
            "contexts_per_s": float(np.median([r.contexts_per_s for r in done])),
            "seeds": [r.seed for r in done],
        }
    paired: dict[str, Any] = {}
    for a, b in pairs(rows, lifelong if lifelong in table else None):
        diff = compare(runs, a, b)
        if diff is not None:
            paired[f"{a} - {b}"] = {"mean": diff.mean, "ci95": list(diff.ci95), "users": diff.users}
    return {"lifelong_row": lifelong, "rows": table, "paired": paired}


def paired_table(entry: Mapping[str, Any]) -> list[str]:
    """Markdown table of one dataset's paired differences (GAUC points, 95% CI)."""
    lines = ["| difference | mean | 95% CI | users |", "|---|---|---|---|"]
    for key, d in entry["paired"].items():
        lo, hi = d["ci95"]
        a, b = key.split(" - ")
        lines.append(f"| {a} − {b} | {d['mean']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {d['users']:,} |")
    return lines


def target_lines(entry: Mapping[str, Any]) -> list[str]:
    """The issue's targets for the lifelong row, each met / missed with its figure."""
    life = entry["lifelong_row"]
    rows, paired = entry["rows"], entry["paired"]
    if life is None or life not in rows:
        return ["- targets: not evaluated (no lifelong row)"]
    lines = []
    for other in TARGET_ROWS:
        d = paired.get(f"{life} - {other}")
        if d is None:
            lines.append(f"- `{life}` ≥ `{other}` + {MARGIN}: not evaluated (no `{other}` row)")
            continue
        lo, hi = d["ci95"]
        ok = d["mean"] >= MARGIN and (other not in CI_ROWS or lo > 0)
        ci = " and CI > 0" if other in CI_ROWS else ""
        lines.append(
            f"- `{life}` ≥ `{other}` + {MARGIN}{ci}: {'**met**' if ok else '**missed**'} "
            f"({d['mean']:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}])"
        )
    own, ref = rows[life]["us_per_request"], rows.get(COST_ROW, {}).get("us_per_request")
    if own is not None and ref is not None:
        ok = own <= ref
        lines.append(
            f"- `{life}` µs/request ≤ `{COST_ROW}`'s at M=2,048: "
            f"{'**met**' if ok else '**missed**'} ({own:,.0f} vs {ref:,.0f} µs)"
        )
    return lines
