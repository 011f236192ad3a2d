"""Training speed per mode: contexts (training targets) per second of optimiser steps.

    python -m bench.micro.train_speed                      # ml-1m (after `make data`), L = 512
    python -m bench.micro.train_speed --dataset synthetic --max-len 512 --negatives 8 127

Each mode trains a fresh ranker for ``--steps`` steps (after one warm-up step) on the same
batches of B contexts of the last L events, each scoring its positive and K sampled
negatives; the median step time gives contexts/s. `softmax` is the baseline, measured in the
same run (one thread: these cores are shared). The cost of building a context's tokens (the
batch SVD of `svd`, the event projections of `softmax`) is shared by its 1 + K candidates,
so more negatives per context favour the modes with an expensive context and a cheap
candidate side.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.config import RankerConfig
from model.datasets import load_dataset
from model.events.interactions import Interactions
from model.events.windows import history_batch, training_positions
from model.ranker import Ranker

REPO = Path(__file__).resolve().parents[2]

MODES = ("softmax", "svd", "svd+recent16", "elastic", "linear", "mean")


def step_seconds(
    data: Interactions, label: str, max_len: int, negatives: int, batch: int, steps: int
) -> float:
    """Median seconds of one training step (forward, BCE, backward, AdamW) of mode ``label``."""
    mode, _, recent = label.partition("+recent")
    config = RankerConfig(
        n_items=data.vocab.n_items,
        n_actions=data.vocab.n_actions,
        mode=mode,  # type: ignore[arg-type]
        recent_tokens=int(recent or 0),
    )
    torch.manual_seed(0)
    ranker = Ranker(config)
    opt = torch.optim.AdamW(ranker.parameters(), lr=1e-3)
    users, positions = training_positions(data)
    rng = np.random.default_rng(0)  # the same batches for every mode
    times = []
    for _ in range(steps + 1):
        idx = rng.choice(users.size, batch)
        start = time.perf_counter()
        hist = history_batch(data, users[idx], positions[idx], max_len)
        sampled = rng.integers(1, data.vocab.n_items, (batch, negatives))
        cands = np.concatenate((data.items[positions[idx]][:, None], sampled), 1)
        logits = ranker(torch.from_numpy(cands), hist, mode)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--data-dir", type=Path, default=REPO / "data")
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--negatives", type=int, nargs="+", default=[8, 127])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--modes", nargs="+", default=list(MODES))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset(args.dataset, args.data_dir)
    print(
        f"{args.dataset}: contexts of the last {args.max_len} events, B = {args.batch}, "
        f"median of {args.steps} steps, one thread"
    )
    print("| mode | K | contexts/s | step ms | ÷ softmax |\n|---|---|---|---|---|")
    for k in args.negatives:
        base = None
        for label in args.modes:
            s = step_seconds(data, label, args.max_len, k, args.batch, args.steps)
            base = base if base is not None else s if label == "softmax" else None
            ratio = f"{base / s:.2f}×" if base else "n/a"
            print(
                f"| {label} | {k} | {args.batch / s:,.0f} | {s * 1e3:,.0f} | {ratio} |", flush=True
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
