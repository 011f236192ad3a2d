"""Leave-last-out offline evaluation (`solar eval`).

Per user with ≥ 3 events: the last event is the test target and the one before it the
validation target; the context is the (truncated) history before the target. The target is
ranked against the whole catalogue minus the items the user saw before it (``negatives=None``,
MovieLens) or against ``negatives`` items sampled uniformly from the catalogue (synthetic).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from model.checkpoint import load_checkpoint
from model.config import ATTENTION_MODES
from model.datasets import COLUMNS_HELP, GENERATED, DatasetError, columns_argument, load_dataset
from model.events.interactions import Interactions
from model.events.windows import history_batch
from model.metrics import RankingMetrics, ranking_metrics
from model.ranker import HistoryBatch, Ranker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSpec:
    """What to evaluate.

    Attributes:
        split: "test" (last event) or "valid" (the one before).
        negatives: None = catalogue minus seen items; k = k uniformly sampled items.
        max_len: longest context (most recent events). max_users: sample this many users.
        half_life_s: recency half-life of the context weights (None: no decay).
    """

    split: str = "test"
    negatives: int | None = None
    max_len: int = 100
    max_users: int | None = None
    half_life_s: float | None = None
    batch_users: int = 32
    seed: int = 0


def eval_users(data: Interactions, spec: EvalSpec) -> NDArray[np.int64]:
    """Users with ≥ 3 events, sampled down to ``spec.max_users`` (deterministic by seed)."""
    users = np.flatnonzero(data.lengths >= 3)
    if spec.max_users is not None and users.size > spec.max_users:
        rng = np.random.default_rng(spec.seed + 7919)
        users = np.sort(rng.choice(users, size=spec.max_users, replace=False))
    return users.astype(np.int64)


def _candidates(
    data: Interactions, users: NDArray, targets: NDArray, spec: EvalSpec, rng: np.random.Generator
) -> torch.Tensor:
    """(B, M) item rows; column 0 is the target. Whole catalogue when negatives is None."""
    n = data.vocab.n_items - 1
    if spec.negatives is None:
        catalogue = np.arange(1, n + 1)
        return torch.from_numpy(np.tile(catalogue, (len(users), 1)))
    k = min(spec.negatives, n - 1)
    rows = []
    for t in targets:
        neg = rng.choice(n - 1, size=k, replace=False) + 1  # rows 1..n-1
        neg = np.where(neg >= data.items[t], neg + 1, neg)  # skip the target row
        rows.append(np.concatenate(([data.items[t]], neg)))
    return torch.from_numpy(np.stack(rows))


Scorer = Callable[[torch.Tensor, HistoryBatch], torch.Tensor]
"""Logits (B, M) of candidate rows (B, M) given the users' histories (a ranker in one mode,
or a counting reference such as ``bench.quality.references``)."""


@torch.no_grad()
def score_split(
    ranker: Ranker, data: Interactions, mode: str, spec: EvalSpec
) -> tuple[NDArray[np.float64], list[NDArray[np.float64]]]:
    """Target logits (U,) and per-user negative logits of the evaluated users."""
    ranker.eval()
    device = ranker.item_emb.weight.device
    return score_with(lambda cands, hist: ranker(cands, hist, mode), data, spec, device)


@torch.no_grad()
def score_with(
    scorer: Scorer, data: Interactions, spec: EvalSpec, device: torch.device | str = "cpu"
) -> tuple[NDArray[np.float64], list[NDArray[np.float64]]]:
    """:func:`score_split` for any ``scorer``: the same users, targets and negatives (all
    drawn from ``spec`` alone), so scorers compare user by user."""
    users = eval_users(data, spec)
    shift = 1 if spec.split == "test" else 2
    rng = np.random.default_rng(spec.seed)
    positives: list[float] = []
    negatives: list[NDArray[np.float64]] = []
    for lo in range(0, users.size, spec.batch_users):
        batch = users[lo : lo + spec.batch_users]
        targets = data.offsets[batch + 1] - shift  # flat index of each target
        cands = _candidates(data, batch, targets, spec, rng)
        hist = history_batch(data, batch, targets, spec.max_len, spec.half_life_s, device)
        logits = scorer(cands.to(device), hist).double().cpu().numpy()  # (B, M)
        for i, (u, t) in enumerate(zip(batch, targets, strict=True)):
            if spec.negatives is None:
                if data.items[t] == 0:  # an OOV target is not in the catalogue: nothing to rank
                    continue
                seen = data.items[data.offsets[u] : t]
                seen = seen[seen > 0]  # OOV history rows are no catalogue items either
                keep = np.ones(logits.shape[1], dtype=bool)
                keep[seen - 1] = False
                keep[data.items[t] - 1] = False
                positives.append(float(logits[i, data.items[t] - 1]))
                negatives.append(logits[i, keep])
            else:
                positives.append(float(logits[i, 0]))
                negatives.append(logits[i, 1:])
    return np.asarray(positives), negatives


def evaluate(ranker: Ranker, data: Interactions, mode: str, spec: EvalSpec) -> RankingMetrics:
    """Leave-last-out metrics of ``ranker`` in attention ``mode`` (see module docstring)."""
    positives, negatives = score_split(ranker, data, mode, spec)
    return ranking_metrics(positives, negatives)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="solar eval", description=__doc__)
    p.add_argument("--checkpoint", type=Path, default=Path("artifacts/default-model"))
    p.add_argument("--dataset", default="ml-100k", help="ml-100k | ml-1m | synthetic | file")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--columns", type=columns_argument, help=COLUMNS_HELP)
    p.add_argument("--sort", action="store_true", help="sort a file's events by time")
    p.add_argument("--modes", nargs="+", default=None, choices=ATTENTION_MODES)
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--negatives", type=int, default=None, help="sampled negatives (default: all)")
    p.add_argument("--max-len", type=int, default=None, help="default: the training value")
    p.add_argument("--max-users", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`solar eval`: metrics of a checkpoint on a dataset, one row per attention mode."""
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ckpt = load_checkpoint(args.checkpoint, args.device)
    meta = ckpt.meta
    try:
        data = load_dataset(args.dataset, args.data_dir, sort=args.sort, columns=args.columns)
    except DatasetError as exc:
        log.error("%s", exc)
        return 1
    if data.vocab != ckpt.vocab:
        log.warning("mapping the dataset onto the checkpoint's vocabulary (unknown ids → OOV)")
        data = data.with_vocabulary(ckpt.vocab)
    spec = EvalSpec(
        split=args.split,
        negatives=args.negatives if args.dataset not in GENERATED else args.negatives or 2048,
        max_len=args.max_len or int(meta.get("max_len", 100)),
        max_users=args.max_users,
        half_life_s=ckpt.ranker.config.half_life_s,
        seed=args.seed,
    )
    modes = args.modes or [ckpt.ranker.config.mode]
    results = {mode: evaluate(ckpt.ranker, data, mode, spec).as_dict() for mode in modes}
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(f"{'mode':10s} " + " ".join(f"{k:>8s}" for k in next(iter(results.values()))))
        for mode, row in results.items():
            print(f"{mode:10s} " + " ".join(f"{v:8.4f}" for v in row.values()))
    return 0
