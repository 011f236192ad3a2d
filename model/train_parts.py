"""Pieces of the training loop (``model.train``): the negative sampler and the record of
validations that keeps the best weights."""

from __future__ import annotations

import copy

import numpy as np
import torch
from numpy.typing import NDArray

from model.events.interactions import Interactions
from model.ranker import Ranker

__all__ = ["BestValidation", "NegativeSampler"]


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
    """Validation GAUCs so far and the weights of the best one."""

    def __init__(self, initial: dict[str, torch.Tensor]) -> None:
        self.best_state = initial
        self.best_step, self.last_step = 0, -1
        self.val_gauc: list[float] = []
        self._since_best = 0

    def validated(self, gauc: float, step: int, ranker: Ranker) -> int:
        """Record a validation at ``step``; returns validations since the best."""
        self.last_step = step
        if gauc > max(self.val_gauc, default=-1.0):
            self.best_state, self.best_step = copy.deepcopy(ranker.state_dict()), step
            self._since_best = 0
        else:
            self._since_best += 1
        self.val_gauc.append(gauc)
        return self._since_best
