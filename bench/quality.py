"""Quality grid: train + evaluate every attention mode, 3 seeds, on ml-100k, ml-1m, synthetic,
plus a synthetic sweep of history length and rank; writes docs/RESULTS.md and a plot.

    python bench/quality.py            # the committed run (see docs/RESULTS.md)

Runs are independent processes (one CPU thread each, ``--workers`` at a time). Training is
capped by optimiser steps (deterministic), not by time.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from model.config import ATTENTION_MODES, AttentionMode, RankerConfig
from model.datasets import load_dataset
from model.evaluate import EvalSpec, evaluate
from model.events.interactions import Interactions
from model.metrics import METRIC_NAMES
from model.ranker import Ranker
from model.synthetic import SyntheticConfig, generate
from model.train import TrainConfig, train

SYNTH = SyntheticConfig(n_users=100, min_length=1_000, max_length=2_000, seed=0)
SWEEP = SyntheticConfig(n_users=16, min_length=10_000, max_length=10_000, seed=1)
# dataset → (users sampled for training, TrainConfig fields, EvalSpec fields)
SETTINGS: dict[str, tuple[int | None, dict[str, Any], dict[str, Any]]] = {
    "ml-100k": (None, {"max_steps": 400, "batch_size": 128, "max_len": 50}, {"max_len": 50}),
    "ml-1m": (
        1000,
        {"max_steps": 400, "batch_size": 128, "max_len": 50},
        {"max_len": 50, "max_users": 200},
    ),
    "synthetic": (
        None,
        {"max_steps": 300, "batch_size": 64, "max_len": 200},
        {"max_len": 200, "negatives": 2048, "max_users": 100},
    ),
}
SWEEP_LENGTHS = (1_000, 2_000, 5_000, 10_000)
SWEEP_RANKS = (4, 8, 16, 32, 64)


@functools.lru_cache(maxsize=4)
def _data(name: str) -> Interactions:
    if name == "synthetic":
        return generate(SYNTH).interactions
    if name == "sweep":
        return generate(SWEEP).interactions
    data = load_dataset(name, "data")
    n_users = SETTINGS[name][0]
    if n_users is not None and data.n_users > n_users:
        pick = np.random.default_rng(0).choice(data.n_users, n_users, replace=False)
        data = data.subset(np.sort(pick))
    return data


def _train(name: str, mode: str, seed: int, extra: dict[str, Any]) -> Ranker:
    data = _data(name)
    cfg = RankerConfig(
        n_items=data.vocab.n_items, n_actions=data.vocab.n_actions, mode=cast(AttentionMode, mode)
    )
    fields = {"epochs": 100, "val_users": 200, "seed": seed, "device": "cpu", "progress": False}
    return train(cfg, data, TrainConfig(**{**fields, **extra})).ranker


def run_one(job: tuple[str, str, int]) -> tuple[str, str, int, dict[str, float], float]:
    """Train and test one (dataset, mode, seed); returns its metrics and wall seconds."""
    torch.set_num_threads(1)
    name, mode, seed = job
    start = time.perf_counter()
    _, train_fields, eval_fields = SETTINGS[name]
    ranker = _train(name, mode, seed, train_fields)
    m = evaluate(ranker, _data(name), mode, EvalSpec(seed=seed, **eval_fields))
    return name, mode, seed, m.as_dict(), time.perf_counter() - start


def run_sweep(_: int = 0) -> dict[str, list[float]]:
    """AUC of one svd-trained model (synthetic, 10,000-event users) in svd (r) and softmax."""
    torch.set_num_threads(1)
    ranker = _train("sweep", "svd", 0, {"max_steps": 300, "batch_size": 64, "max_len": 200})
    data = _data("sweep")
    spec = EvalSpec(negatives=2048, batch_users=2, max_users=SWEEP.n_users)
    out: dict[str, list[float]] = {"svd": [], "softmax": [], "rank": []}
    for n in SWEEP_LENGTHS:
        for mode in ("svd", "softmax"):
            out[mode].append(evaluate(ranker, data, mode, dataclasses.replace(spec, max_len=n)).auc)
    for r in SWEEP_RANKS:
        ranked = Ranker(dataclasses.replace(ranker.config, rank=r))
        ranked.load_state_dict(ranker.state_dict())
        out["rank"].append(
            evaluate(ranked, data, "svd", dataclasses.replace(spec, max_len=2000)).auc
        )
    return out


def _table(rows: dict[str, list[dict[str, float]]]) -> str:
    head = (
        "| mode | " + " | ".join(METRIC_NAMES) + " |\n" + "|---" * (len(METRIC_NAMES) + 1) + "|\n"
    )
    lines = []
    for mode in ATTENTION_MODES:
        runs = rows.get(mode, [])
        cells = [
            f"{np.mean([r[k] for r in runs]):.4f} ± {np.std([r[k] for r in runs]):.4f}"
            for k in METRIC_NAMES
        ]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def _targets(rows: dict[str, list[dict[str, float]]]) -> str:
    auc = {m: float(np.mean([r["AUC"] for r in rows[m]])) for m in rows}
    gap = auc["softmax"] - auc["svd"]
    ok = gap <= 0.005 and auc["svd"] > auc["linear"] and auc["svd"] > auc["mean"]
    return (
        f"Target (svd within 0.005 AUC of softmax, above linear and mean): "
        f"{'**met**' if ok else '**missed**'} — softmax − svd = {gap:+.4f}, "
        f"svd − linear = {auc['svd'] - auc['linear']:+.4f}, "
        f"svd − mean = {auc['svd'] - auc['mean']:+.4f}.\n"
    )


def _document(
    results: dict[str, dict[str, list[dict[str, float]]]],
    sweep: dict[str, list[float]],
    wall: float,
    command: str,
    seeds: list[int],
) -> str:
    parts = [
        "# Offline quality results\n",
        "Generated by `bench/quality.py`; do not edit by hand.\n",
        f"- Command: `{command}` (after `make data`)",
        f"- Machine: {platform.platform()}, {os.cpu_count()} CPU cores (shared with other "
        f"jobs while it ran), torch {torch.__version__}, one thread per run",
        f"- Wall time: {wall / 60:.1f} min",
        "- Every run: AdamW, BCE on the next item + 8 uniform negatives, training capped by "
        "optimiser steps (see SETTINGS in the script), validation AUC each epoch, best kept; "
        "test = each user's last event (leave-last-out), metrics as mean ± std over seeds "
        f"{', '.join(map(str, seeds))}. d=64, heads=4, r=32, no recency decay.\n",
    ]
    for name, rows in results.items():
        users, train_fields, eval_fields = SETTINGS[name]
        parts.append(f"## {name}\n")
        parts.append(
            f"Training users: {users or 'all'}; training {train_fields}; evaluation "
            f"{eval_fields} (negatives absent = whole catalogue minus seen items).\n"
        )
        parts.append(_table(rows))
        parts.append(_targets(rows))
    parts.append("## Synthetic sweep (one svd-trained model, 16 users of 10,000 events)\n")
    parts.append("Test AUC vs 2,048 sampled candidates, same weights in both modes.\n")
    parts.append("| N | " + " | ".join(f"{n:,}" for n in SWEEP_LENGTHS) + " |")
    parts.append("|---" * (len(SWEEP_LENGTHS) + 1) + "|")
    for mode in ("softmax", "svd"):
        parts.append(f"| {mode} | " + " | ".join(f"{v:.4f}" for v in sweep[mode]) + " |")
    parts.append("\n| r (N=2,000) | " + " | ".join(str(r) for r in SWEEP_RANKS) + " |")
    parts.append("|---" * (len(SWEEP_RANKS) + 1) + "|")
    parts.append("| svd | " + " | ".join(f"{v:.4f}" for v in sweep["rank"]) + " |\n")
    parts.append("![sweep](quality_sweep.png)\n")
    return "\n".join(parts)


def _plot(sweep: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(SWEEP_LENGTHS, sweep["softmax"], "o-", label="softmax")
    a.plot(SWEEP_LENGTHS, sweep["svd"], "s-", label="svd (r=32)")
    a.set(xscale="log", xlabel="history length N", ylabel="test AUC", title="AUC vs N")
    a.legend()
    b.plot(SWEEP_RANKS, sweep["rank"], "s-", label="svd")
    b.axhline(sweep["softmax"][1], color="gray", ls="--", label="softmax (N=2,000)")
    b.set(xscale="log", xlabel="rank r", ylabel="test AUC", title="AUC vs r (N=2,000)")
    b.legend()
    for axis, ticks in ((a, SWEEP_LENGTHS), (b, SWEEP_RANKS)):
        axis.set_xticks(ticks, [f"{t:,}" for t in ticks])
        axis.minorticks_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--datasets", nargs="+", default=list(SETTINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=3, help="processes (the sweep holds one)")
    p.add_argument("--out", type=Path, default=Path("docs"))
    args = p.parse_args(argv)
    start = time.perf_counter()
    jobs = [(d, m, s) for d in args.datasets for m in ATTENTION_MODES for s in args.seeds]
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        sweep_future = pool.submit(run_sweep)
        for name, mode, seed, metrics, wall in pool.map(run_one, jobs):
            print(f"{name:10s} {mode:10s} seed {seed} AUC {metrics['AUC']:.4f} ({wall:.0f}s)")
            results.setdefault(name, {}).setdefault(mode, []).append(metrics)
        sweep = sweep_future.result()
    wall = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    _plot(sweep, args.out / "quality_sweep.png")
    argv_text = " ".join(argv if argv is not None else __import__("sys").argv[1:])
    doc = _document(
        results, sweep, wall, f"python bench/quality.py {argv_text}".strip(), args.seeds
    )
    (args.out / "RESULTS.md").write_text(doc)
    print(f"wrote {args.out / 'RESULTS.md'} in {wall:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
