"""The quality study's training step of one row: steps/s with the for-loop AdamW (torch's CPU
default, the baseline) and with the fused AdamW the trainer uses, alternating in one run.

    python -m bench.quality.train_step                                  # lifelong, complete-journey
    python -m bench.quality.train_step --row lifelong+hl30d --users 400 --rounds 8

Both arms start from the same weights and draw the same batches (the study's own
``model.train._step``, its row config and its user sample); rounds of ``--steps`` steps
alternate between the arms so load on the shared cores hits both alike. Prints the median
steps/s of each arm and each arm's last loss (the fused update is the same arithmetic).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from bench.quality.cli import ROWS, settings_for
from bench.quality.setup import Job, contexts, dataset, model_config, train_config
from model.events.interactions import Interactions
from model.events.windows import training_positions
from model.ranker import Ranker
from model.train import NegativeSampler, TrainConfig, _batches, _step

REPO = Path(__file__).resolve().parents[2]


class Arm(NamedTuple):
    """One optimiser variant's ranker, optimiser, sampler and batch stream."""

    ranker: Ranker
    opt: torch.optim.Optimizer
    sampler: NegativeSampler
    batches: Iterator[tuple[int, np.ndarray]]


def _arm(job: Job, data: Interactions, cfg: TrainConfig, fused: bool) -> Arm:
    torch.manual_seed(job.seed)
    rng = np.random.default_rng(job.seed)
    ranker = Ranker(model_config(job, data))
    opt = torch.optim.AdamW(
        ranker.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None
    )
    n_examples = training_positions(data)[0].size
    return Arm(
        ranker, opt, NegativeSampler(data, cfg.sampling, rng), _batches(n_examples, cfg, rng)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="complete-journey")
    p.add_argument("--row", default="lifelong", choices=[r.label for r in ROWS])
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--steps", type=int, default=5, help="steps per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--data-dir", type=Path, default=REPO / "data")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    row = {r.label: r for r in ROWS}[args.row]
    job = Job(args.dataset, settings_for(args.dataset, False, users=args.users), row, 0)
    job = job._replace(data_dir=str(args.data_dir))
    data = dataset(job)
    cfg = train_config(job, contexts(job, data)[0])
    examples = training_positions(data)
    arms = {
        "for-loop AdamW": _arm(job, data, cfg, False),
        "fused AdamW": _arm(job, data, cfg, True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    loss: dict[str, float] = {}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, arm in arms.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                idx = next(arm.batches)[1]
                loss[name] = _step(arm.ranker, arm.opt, data, examples, idx, cfg, arm.sampler)
            seconds[name].append((time.perf_counter() - start) / args.steps)
    print(
        f"{args.dataset} ({data.n_users} users), row {args.row}: B = {cfg.batch_size} contexts "
        f"of ≤ {cfg.max_len} events, {cfg.negatives} negatives; median of {args.rounds} rounds "
        f"of {args.steps} steps, one thread"
    )
    print("| optimiser | steps/s | ms/step | last loss |\n|---|---|---|---|")
    for name, times in seconds.items():
        s = statistics.median(times[1:])
        print(f"| {name} | {1 / s:.2f} | {s * 1e3:.0f} | {loss[name]:.5f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
