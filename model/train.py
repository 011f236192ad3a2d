"""Train a ranker (`solar train`): next-item BCE with sampled negatives, AdamW, early stopping.

Every event of a user except the first and the last two (validation, test) is a training
target; its context is the user's previous ``max_len`` events. Each target is scored with
``negatives`` sampled items (uniform, or ∝ popularity^0.75) under binary cross-entropy.
After every epoch the validation AUC (each user's second-to-last event against sampled
negatives) is measured; training stops after ``patience`` epochs without improvement and
keeps the best weights.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from tqdm import tqdm

from model.checkpoint import save_checkpoint
from model.config import ATTENTION_MODES, RankerConfig
from model.datasets import COLUMNS_HELP, DatasetError, columns_argument, load_dataset
from model.device import resolve_device
from model.evaluate import EvalSpec, evaluate
from model.events.interactions import Interactions
from model.events.windows import history_batch, training_positions
from model.ranker import Ranker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the model's own live in RankerConfig).

    Attributes:
        max_len: longest training context (most recent events), for speed.
        negatives: sampled negatives per target; sampling: "uniform" | "popularity".
        val_users / val_negatives: size of the per-epoch validation.
        time_budget_s: stop (keeping the best epoch) once training has run this long; the
            run is then only deterministic when the budget is not reached.
        max_steps: stop after this many optimiser steps in all (deterministic budget).
        eval_every: validate every this many steps (None: once per epoch); ``patience``
            counts validations without improvement.
        patience_steps: stop once this many optimiser steps have passed since the best
            validation (replaces ``patience`` when set: a budget in steps does not depend on
            how often one validates).
        val_smoothing: the signal early stopping (and the kept weights) follow is the
            exponential moving average of validation GAUC with this factor α (0: the raw
            GAUC; s_t = α·s_{t-1} + (1 − α)·g_t), so one noisy validation neither stops the
            run nor picks its weights.
    """

    epochs: int = 4
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    negatives: int = 8
    sampling: str = "uniform"
    max_len: int = 50
    val_users: int = 500
    val_negatives: int = 100
    patience: int = 2
    seed: int = 0
    device: str = "cpu"
    time_budget_s: float | None = None
    max_steps: int | None = None
    eval_every: int | None = None
    patience_steps: int | None = None
    val_smoothing: float = 0.0
    progress: bool = field(default_factory=lambda: sys.stderr.isatty())


@dataclass(frozen=True)
class TrainResult:
    """The trained ranker (best validation) and its training record.

    Attributes:
        best_step: optimiser steps at the best validation. val_gauc: every validation GAUC.
        contexts_per_s: training contexts (targets) per second of optimiser steps, validation
            time excluded.
    """

    ranker: Ranker
    best_step: int
    val_gauc: list[float]
    wall_s: float
    steps: int
    contexts_per_s: float = 0.0


class NegativeSampler:
    """Draws item rows 1..n_items-1 uniformly or ∝ count^0.75 over the training events."""

    def __init__(self, data: Interactions, sampling: str, rng: np.random.Generator) -> None:
        if sampling not in ("uniform", "popularity"):
            raise ValueError(f"sampling must be 'uniform' or 'popularity', got {sampling!r}")
        n = data.vocab.n_items
        self.rng = rng
        self.n = n
        self.p: NDArray[np.float64] | None = None
        if sampling == "popularity":
            counts = np.bincount(data.items, minlength=n)[1:].astype(np.float64) ** 0.75
            self.p = counts / counts.sum()

    def __call__(self, shape: tuple[int, int]) -> NDArray[np.int64]:
        if self.p is None:
            return self.rng.integers(1, self.n, size=shape)
        return self.rng.choice(self.n - 1, size=shape, p=self.p) + 1


class BestValidation:
    """Validation GAUCs so far and the weights of the best one (by the smoothed signal:
    s_t = α·s_{t-1} + (1 − α)·g_t, s_0 = g_0; α = 0 follows the raw GAUC)."""

    def __init__(self, initial: dict[str, torch.Tensor], smoothing: float = 0.0) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"val_smoothing must be in [0, 1), got {smoothing}")
        self.best_state = initial
        self.best_step, self.last_step = 0, -1
        self.val_gauc: list[float] = []
        self._since_best = 0
        self._alpha = smoothing
        self._signal: float | None = None
        self._best_signal = -1.0

    def validated(self, gauc: float, step: int, ranker: Ranker) -> int:
        """Record a validation at ``step``; returns validations since the best."""
        self.last_step = step
        a = self._alpha
        self._signal = gauc if self._signal is None else a * self._signal + (1 - a) * gauc
        if self._signal > self._best_signal:
            self.best_state, self.best_step = copy.deepcopy(ranker.state_dict()), step
            self._best_signal = self._signal
            self._since_best = 0
        else:
            self._since_best += 1
        self.val_gauc.append(gauc)
        return self._since_best

    def should_stop(self, cfg: TrainConfig) -> bool:
        """Patience exhausted: ``patience_steps`` steps, else ``patience`` validations."""
        if cfg.patience_steps is not None:
            return self.last_step - self.best_step >= cfg.patience_steps
        return self._since_best >= cfg.patience


def _batches(
    n_examples: int, cfg: TrainConfig, rng: np.random.Generator
) -> Iterator[tuple[int, NDArray[np.int64]]]:
    """(epoch, example indices) of every optimiser step: ``cfg.epochs`` shuffled passes."""
    for epoch in range(cfg.epochs):
        order = rng.permutation(n_examples)
        for lo in range(0, n_examples, cfg.batch_size):
            yield epoch, order[lo : lo + cfg.batch_size]


def _step(
    ranker: Ranker,
    opt: torch.optim.Optimizer,
    data: Interactions,
    examples: tuple[NDArray, NDArray],
    idx: NDArray[np.int64],
    cfg: TrainConfig,
    sampler: NegativeSampler,
) -> float:
    """One optimiser step on the targets ``idx``: each context (built once) scores its
    positive and ``cfg.negatives`` sampled items; returns the BCE loss of the trained mode
    (an svd read-out's own loss, on detached inputs, trains the read-out alone)."""
    device = ranker.item_emb.weight.device
    users, positions = examples
    u, pos = users[idx], positions[idx]
    hist = history_batch(data, u, pos, cfg.max_len, ranker.config.half_life_s, device)
    cands = np.concatenate((data.items[pos][:, None], sampler((idx.size, cfg.negatives))), 1)
    labels = torch.zeros(cands.shape, device=device)  # (B, 1+K)
    labels[:, 0] = 1.0
    logits = ranker.training_logits(torch.from_numpy(cands).to(device), hist)  # (B, 1+K)
    loss = F.binary_cross_entropy_with_logits(logits.trained, labels)
    total = loss
    if logits.readout is not None:
        total = loss + F.binary_cross_entropy_with_logits(logits.readout, labels)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return float(loss.detach())


def train(model_cfg: RankerConfig, data: Interactions, cfg: TrainConfig) -> TrainResult:
    """Train a ranker on ``data``; deterministic for a given seed and device.

    Validation GAUC is measured every ``cfg.eval_every`` steps (default: once per epoch)
    and at the end; training stops after ``cfg.patience`` validations without improvement,
    after ``cfg.epochs`` passes, or at ``cfg.max_steps`` / ``cfg.time_budget_s``, and keeps
    the best validated weights.
    """
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    ranker = Ranker(model_cfg).to(device)
    # fused: one pass over each parameter instead of the for-loop's ~8 (CPU default); the
    # dense item-embedding update was ~15% of a lifelong step (docs/TRAINING.md).
    opt = torch.optim.AdamW(
        ranker.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )
    examples = training_positions(data)
    if examples[0].size == 0:
        raise ValueError("no training targets: every user needs at least 4 events")
    sampler = NegativeSampler(data, cfg.sampling, rng)
    val = EvalSpec(
        split="valid",
        negatives=cfg.val_negatives,
        max_len=cfg.max_len,
        max_users=cfg.val_users,
        half_life_s=model_cfg.half_life_s,
        seed=cfg.seed,
    )
    per_epoch = -(-examples[0].size // cfg.batch_size)
    every = cfg.eval_every or per_epoch
    deadline = start + (cfg.time_budget_s if cfg.time_budget_s else float("inf"))
    max_steps = cfg.max_steps if cfg.max_steps is not None else 2**62
    record = BestValidation(copy.deepcopy(ranker.state_dict()), cfg.val_smoothing)
    steps, contexts, loss_sum, train_s = 0, 0, 0.0, 0.0
    bar = tqdm(total=min(max_steps, per_epoch * cfg.epochs), disable=not cfg.progress)
    for epoch, idx in _batches(examples[0].size, cfg, rng):
        step_start = time.perf_counter()
        ranker.train()
        loss_sum += _step(ranker, opt, data, examples, idx, cfg, sampler)
        train_s += time.perf_counter() - step_start
        steps += 1
        contexts += idx.size
        bar.update()
        out_of_budget = steps >= max_steps or time.perf_counter() >= deadline
        if steps % every == 0 or out_of_budget:
            gauc = evaluate(ranker, data, model_cfg.mode, val).gauc
            log.info(
                "step %d (epoch %d) loss %.4f val GAUC %.4f (%.0fs)",
                steps,
                epoch,
                loss_sum / every,
                gauc,
                time.perf_counter() - start,
            )
            loss_sum = 0.0
            record.validated(gauc, steps, ranker)
            if record.should_stop(cfg):
                log.info("early stop at step %d: best (smoothed) at %d", steps, record.best_step)
                break
        if out_of_budget:
            log.info("budget reached after %d steps", steps)
            break
    else:
        if not record.val_gauc or record.last_step != steps:
            record.validated(evaluate(ranker, data, model_cfg.mode, val).gauc, steps, ranker)
    bar.close()
    ranker.load_state_dict(record.best_state)
    ranker.eval()
    wall = time.perf_counter() - start
    return TrainResult(
        ranker,
        record.best_step,
        record.val_gauc,
        wall,
        steps,
        contexts / train_s if train_s else 0.0,
    )


def train_meta(result: TrainResult, cfg: TrainConfig, dataset: str) -> dict[str, object]:
    """Checkpoint metadata: the training settings and record."""
    settings = {k: v for k, v in asdict(cfg).items() if k != "progress"}
    return {
        "dataset": dataset,
        "max_len": cfg.max_len,
        "train": settings,
        "best_step": result.best_step,
        "steps": result.steps,
        "val_gauc": result.val_gauc,
        "contexts_per_s": round(result.contexts_per_s, 1),
        "wall_s": round(result.wall_s, 1),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="solar train", description=__doc__)
    p.add_argument("--dataset", default="ml-100k", help="ml-100k | ml-1m | synthetic | file")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--out", type=Path, default=Path("artifacts/default-model"))
    p.add_argument("--mode", default="svd", choices=ATTENTION_MODES)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--half-life-s", type=float, default=None, help="recency half-life (s)")
    p.add_argument(
        "--recent-tokens", type=int, default=0, help="svd hybrid: the k latest events as tokens"
    )
    p.add_argument(
        "--repeat-buckets",
        type=int,
        default=0,
        help="lifelong: buckets a row of the repeat channel's hashed item counts (0: none)",
    )
    p.add_argument(
        "--svd-readout",
        action="store_true",
        help="lifelong: also train a one-channel read-out, so the model serves svd, "
        "svd_exact and softmax too",
    )
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--negatives", type=int, default=TrainConfig.negatives)
    p.add_argument("--sampling", choices=("uniform", "popularity"), default="uniform")
    p.add_argument("--max-len", type=int, default=TrainConfig.max_len)
    p.add_argument("--max-users", type=int, default=None, help="train on a user sample")
    p.add_argument("--patience", type=int, default=TrainConfig.patience)
    p.add_argument(
        "--time-budget-s",
        type=float,
        default=0.0,
        help="also stop after this many seconds (0: no limit); the model then depends on the "
        "machine's speed, so prefer --max-steps",
    )
    p.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many optimiser steps"
    )
    p.add_argument(
        "--eval-every", type=int, default=None, help="validate every N steps (default: per epoch)"
    )
    p.add_argument("--sort", action="store_true", help="sort a file's events by time")
    p.add_argument("--columns", type=columns_argument, help=COLUMNS_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: robust when shared)")
    return p


def main(argv: list[str] | None = None) -> int:
    """`solar train`: load a dataset, train, write a checkpoint to ``--out``."""
    args = _parser().parse_args(argv)
    # Intra-op threads spin-wait: on a busy 2-core host 2 threads ran ~15x slower than 1.
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        data = load_dataset(args.dataset, args.data_dir, sort=args.sort, columns=args.columns)
    except DatasetError as exc:
        log.error("%s", exc)
        return 1
    if args.max_users is not None and data.n_users > args.max_users:
        pick = np.random.default_rng(args.seed).choice(data.n_users, args.max_users, replace=False)
        data = data.subset(np.sort(pick))
    log.info(
        "%s: %d users, %d events, %d items",
        args.dataset,
        data.n_users,
        data.n_events,
        data.vocab.n_items - 1,
    )
    model_cfg = RankerConfig(
        n_items=data.vocab.n_items,
        n_actions=data.vocab.n_actions,
        dim=args.dim,
        heads=args.heads,
        rank=args.rank,
        mode=args.mode,
        half_life_s=args.half_life_s,
        recent_tokens=args.recent_tokens,
        repeat_buckets=args.repeat_buckets,
        svd_readout=args.svd_readout,
    )
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        negatives=args.negatives,
        sampling=args.sampling,
        max_len=args.max_len,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        time_budget_s=args.time_budget_s or None,
        max_steps=args.max_steps,
        eval_every=args.eval_every,
    )
    result = train(model_cfg, data, cfg)
    version = save_checkpoint(
        args.out, result.ranker, data.vocab, train_meta(result, cfg, args.dataset)
    )
    log.info("wrote %s (version %s) in %.0fs", args.out, version, result.wall_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
