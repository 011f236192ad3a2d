"""Counting references on the quality study's test split: what counting alone gets, with no
training, next to the learned rows of docs/results.json.

    python -m bench.quality.references                        # the study's three datasets
    python -m bench.quality.references --datasets ml-1m --markdown ""   # print only

Each reference is a :data:`model.evaluate.Scorer`, scored by ``model.evaluate.score_with`` on
the study's own test users, targets and negatives (seed 0's), so its GAUC compares with a
row's seed-0 GAUC user by user. Counts come from every event but the users' test targets:
the same events the learned rows train on, the validation targets included.

- ``popularity``: the candidate's events in the log;
- ``repeats``: how often the candidate occurs in the user's history (what the ``lifelong``
  row's repeat channel counts), popularity breaking ties;
- ``transitions``: item-to-item counts from the user's last 5 events j,
  Σ_j Σ_{lag=1..3} C_lag(j → c) / (lag · (n_j + 10)), popularity breaking ties: what a
  sequential model can learn from the order of events.

Writes section ``references`` of docs/RESULTS.md (the study keeps it when it rewrites the
document).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bench.common.markdown import write_section
from bench.quality.cli import DEFAULT_DATASETS, LIFELONG_ROW, ROWS, settings_for
from bench.quality.setup import Job, dataset
from model.evaluate import EvalSpec, Scorer, score_with
from model.events.interactions import Interactions
from model.metrics import RankingMetrics, ranking_metrics
from model.ranker import HistoryBatch

__all__ = ["REFERENCES", "TransitionCounts", "reference_scorers", "training_events"]

REPO = Path(__file__).resolve().parents[2]
RECENT = 5  # the user's latest events the transitions start from
LAGS = (1, 2, 3)  # how many events later a transition may land
SMOOTHING = 10.0  # added to n_j: a rare source item's few transitions count less
TIE_BREAK = 1e-6  # popularity's share of a score that counts something else

Array = NDArray[np.float64]


def training_events(data: Interactions) -> NDArray[np.bool_]:
    """(E,) True for every event but each user's last one (the test target)."""
    keep = np.ones(data.n_events, dtype=bool)
    ends = data.offsets[1:]
    keep[ends[ends > data.offsets[:-1]] - 1] = False
    return keep


class TransitionCounts:
    """C_lag(j → c) over the training events, as CSR rows by source item j.

    Attributes:
        starts: (n_items + 1,) the slice of ``targets`` / ``weights`` that source j owns.
        targets: (P,) item rows c. weights: (P,) Σ_lag C_lag(j → c) / lag.
    """

    def __init__(self, data: Interactions, keep: NDArray[np.bool_]) -> None:
        n = data.vocab.n_items
        user = np.repeat(np.arange(data.n_users), data.lengths)  # (E,)
        keys, weights = [], []
        for lag in LAGS:
            src = np.arange(data.n_events - lag)
            ok = (user[src] == user[src + lag]) & keep[src + lag]
            keys.append(data.items[src[ok]] * n + data.items[src[ok] + lag])
            weights.append(np.full(int(ok.sum()), 1.0 / lag))
        unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
        self.weights: Array = np.bincount(inverse, weights=np.concatenate(weights))
        self.targets = unique % n
        self.starts = np.searchsorted(unique // n, np.arange(n + 1))

    def scores(self, sources: NDArray[np.int64], counts: Array) -> Array:
        """(n_items,) Σ over ``sources`` j of C(j → ·) / (n_j + SMOOTHING)."""
        out = np.zeros(counts.shape[0])
        for j in sources:
            lo, hi = self.starts[j], self.starts[j + 1]
            np.add.at(out, self.targets[lo:hi], self.weights[lo:hi] / (counts[j] + SMOOTHING))
        return out


REFERENCES = ("popularity", "repeats", "transitions")  # the table's column order


def reference_scorers(data: Interactions) -> dict[str, Scorer]:
    """Every reference's scorer on ``data`` (counts from :func:`training_events`)."""
    keep = training_events(data)
    counts = np.bincount(data.items[keep], minlength=data.vocab.n_items).astype(np.float64)
    popularity = counts / max(counts.max(), 1.0)  # in [0, 1]
    transitions = TransitionCounts(data, keep)

    def per_user(score: Callable[[NDArray[np.int64]], Array]) -> Scorer:
        """A scorer from ``score``: a user's real history rows (oldest first) → (n_items,)."""

        def scorer(cands: torch.Tensor, hist: HistoryBatch) -> torch.Tensor:
            rows, items, mask = cands.numpy(), hist.items.numpy(), hist.mask.numpy()
            out = (
                np.stack([score(items[b][mask[b]])[rows[b]] for b in range(rows.shape[0])])
                + TIE_BREAK * popularity[rows]
            )
            return torch.from_numpy(out)

        return scorer

    return {
        "popularity": lambda cands, hist: torch.from_numpy(popularity[cands.numpy()]),
        "repeats": per_user(lambda h: np.bincount(h, minlength=counts.shape[0]).astype(float)),
        "transitions": per_user(lambda h: transitions.scores(h[-RECENT:], counts)),
    }


def evaluate_references(name: str, data_dir: Path) -> dict[str, RankingMetrics]:
    """Each reference's metrics on dataset ``name``'s test split (the study's settings)."""
    settings = settings_for(name, quick=False)
    data = dataset(Job(name, settings, ROWS[0], 0, data_dir=str(data_dir)))
    spec = EvalSpec(
        negatives=settings.eval_negatives,
        max_len=int(data.lengths.max()),
        max_users=settings.eval_users,
        batch_users=64,
        seed=0,
    )
    scorers = reference_scorers(data)
    return {ref: ranking_metrics(*score_with(scorers[ref], data, spec)) for ref in REFERENCES}


def _study_rows(results: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The study's rows (docs/results.json) by dataset, then by label; {} without it."""
    if not results.is_file():
        return {}
    datasets: dict[str, dict[str, Any]] = json.loads(results.read_text())["datasets"]
    return {name: entry.get("rows", {}) for name, entry in datasets.items()}


def markdown(found: dict[str, dict[str, RankingMetrics]], results: Path, command: str) -> str:
    learned = (LIFELONG_ROW, "softmax@50", "mean")
    lines = [
        "## Counting references",
        "",
        f"Command: `{command}`. The study's test users, targets and negatives of seed 0; no "
        "training. The learned rows: seed 0 of docs/results.json.",
        "",
        "| dataset | "
        + " | ".join([*REFERENCES, *(f"`{label}`" for label in learned)])
        + f" | NDCG@10 transitions / `{LIFELONG_ROW}` |",
        "| --- |" + " --- |" * (len(REFERENCES) + len(learned) + 1),
    ]
    study = _study_rows(results)
    for name, metrics in found.items():
        rows = study.get(name, {})
        cells = [f"{metrics[ref].gauc:.4f}" for ref in REFERENCES]
        cells += [f"{rows[label]['gauc'][0]:.4f}" if label in rows else "–" for label in learned]
        row_ndcg = rows.get(LIFELONG_ROW, {}).get("ndcg10_mean")
        cells.append(
            f"{metrics['transitions'].ndcg_at_10:.4f} / "
            + ("–" if row_ndcg is None else f"{row_ndcg:.4f}")
        )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Columns: GAUC, except the last (NDCG@10; the learned row's over all seeds).")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    p.add_argument("--data-dir", type=Path, default=REPO / "data")
    p.add_argument("--results", type=Path, default=REPO / "docs" / "results.json")
    p.add_argument("--markdown", default=str(REPO / "docs" / "RESULTS.md"), help="'' to print only")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    start = time.perf_counter()
    found = {name: evaluate_references(name, args.data_dir) for name in args.datasets}
    command = shlex.join(["python", "-m", "bench.quality.references", *raw])
    text = markdown(found, args.results, command)
    text += f"\nWall time {time.perf_counter() - start:.0f} s.\n"
    print(text)
    if args.markdown:
        write_section(Path(args.markdown), "references", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
