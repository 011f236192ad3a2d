"""Shared helpers of the state tests: a float64 ranker of a baseline mode and random events."""

from __future__ import annotations

import numpy as np
import torch

from model.config import RankerConfig
from model.lowrank import Decay
from model.ranker import Ranker

DIM, HEADS, TOKENS = 64, 4, 32  # the default sizes (DESIGN §10: state ≤ 16 KB at d=64)


def ranker(mode: str, seed: int = 0, dim: int = DIM, heads: int = HEADS) -> Ranker:
    """A random float64 ranker trained "in" ``mode`` (eval mode)."""
    torch.manual_seed(seed)
    config = RankerConfig(n_items=50, dim=dim, heads=heads, mode=mode, elastic_tokens=TOKENS)
    return Ranker(config).double().eval()


def events(n: int, seed: int, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """Rows (n, d) and times (n,) in arbitrary (not sorted) order, seconds."""
    rng = np.random.default_rng(seed)
    return rng.normal(scale=0.5, size=(n, dim)), rng.uniform(0.0, 5_000.0, size=n)


def blocks(n: int, seed: int) -> list[np.ndarray]:
    """A random permutation of range(n) cut into random blocks (events out of order)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(6, n - 1), replace=False))
    return [block for block in np.split(order, cuts) if block.size]


def log_weights(ts: np.ndarray, decay: Decay | None) -> torch.Tensor:
    """(1, N) log recency weights seen from the latest event, as training computes them."""
    if decay is None:
        return torch.zeros(1, ts.shape[0], dtype=torch.float64)
    return torch.from_numpy(-(ts.max() - ts) / decay.tau_s)[None]
