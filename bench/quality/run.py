"""One run of the quality study: train a row's model, test it, measure its serving cost.

Runs are independent (one process, one torch thread each): training to convergence by
early stopping on validation GAUC (``patience`` validations without improvement; validated
every ``eval_every`` steps where the trainer supports it), then leave-last-out test on the
row's context, then :func:`bench.quality.cost.serving_cost`.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import torch

from bench.quality.cost import serving_cost
from bench.quality.setup import Job, contexts, dataset, model_config, train_config
from model.evaluate import EvalSpec, evaluate
from model.events.windows import training_positions
from model.train import TrainResult, train

MEMORY_BUDGET_BYTES = 3 * 2**30  # per worker process: attention scores of one eval batch
HEADS_FACTOR = 3  # scores, softmax and a temporary of the same size


class RunResult(NamedTuple):
    """What one run records (metrics by METRIC_NAMES; cost of the row; training record)."""

    dataset: str
    label: str
    seed: int
    metrics: dict[str, float]
    train_len: int
    eval_len: int
    steps: int
    best: int  # optimiser step (or epoch, with an older trainer) of the kept weights
    converged: bool  # stopped by early stopping, not by a step / epoch ceiling
    contexts_per_s: float
    wall_s: float
    us_per_request: float
    state_bytes: int


class Skipped(NamedTuple):
    """A run that was not made, with the reason (printed and written to the document)."""

    dataset: str
    label: str
    reason: str


def eval_batch_users(heads: int, candidates: int, context: int) -> int:
    """Users per evaluation batch whose attention scores fit MEMORY_BUDGET_BYTES (0: none)."""
    per_user = HEADS_FACTOR * 4 * heads * candidates * context
    return int(min(32, MEMORY_BUDGET_BYTES // per_user))


def _record(result: TrainResult, batch_size: int) -> tuple[int, float]:
    """(best step or epoch, training contexts per second) of a TrainResult of either the
    current trainer or one that reports ``best_step`` and ``contexts_per_s`` itself."""
    best = int(getattr(result, "best_step", getattr(result, "best_epoch", -1)))
    rate = getattr(result, "contexts_per_s", None)
    if rate is None:  # older trainer: contexts over the whole training wall (validation too)
        rate = result.steps * batch_size / max(result.wall_s, 1e-9)
    return best, float(rate)


def run_one(job: Job) -> RunResult | Skipped:
    """Train, test and time one (dataset, row, seed)."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = dataset(job)
    train_len, eval_len = contexts(job, data)
    model_cfg = model_config(job, data)
    cfg = train_config(job, train_len)
    s = job.settings
    n_cands = (data.vocab.n_items - 1) if s.eval_negatives is None else s.eval_negatives + 1
    attends_events = model_cfg.mode in ("softmax", "svd_exact")
    batch = eval_batch_users(model_cfg.heads, n_cands, eval_len) if attends_events else 32
    train_batch = HEADS_FACTOR * 4 * model_cfg.heads * cfg.batch_size * (1 + cfg.negatives)
    if batch == 0 or (attends_events and train_batch * train_len > MEMORY_BUDGET_BYTES):
        return Skipped(
            job.dataset,
            job.row.label,
            f"attention over {eval_len:,} events does "
            f"not fit {MEMORY_BUDGET_BYTES / 2**30:.0f} GiB per worker",
        )
    result = train(model_cfg, data, cfg)
    spec = EvalSpec(
        negatives=s.eval_negatives,
        max_len=eval_len,
        max_users=s.eval_users,
        half_life_s=model_cfg.half_life_s,
        batch_users=batch,
        seed=job.seed,
    )
    metrics = evaluate(result.ranker, data, model_cfg.mode, spec).as_dict()
    cost = serving_cost(result.ranker, model_cfg.mode, data, eval_len, s.cost_budget_s)
    best, rate = _record(result, cfg.batch_size)
    ceiling = cfg.max_steps if cfg.max_steps is not None else 2**62
    per_epoch = -(-training_positions(data)[0].size // cfg.batch_size)
    converged = result.steps < min(ceiling, cfg.epochs * per_epoch)
    return RunResult(
        job.dataset,
        job.row.label,
        job.seed,
        metrics,
        train_len,
        eval_len,
        result.steps,
        best,
        converged,
        rate,
        time.perf_counter() - start,
        cost.us_per_request,
        cost.state_bytes,
    )
