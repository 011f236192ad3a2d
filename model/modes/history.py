"""Modes whose candidates attend to the user's N logged events: `softmax` and `svd_exact`.

`softmax` is full target attention over the event rows X with a log w_j recency bias, the
exact baseline. `svd_exact` is the same softmax over X V_r V_rᵀ, the rows projected on the
span of the user's factors: equal to `softmax` when rank(X) ≤ r. Both read the event log
(served from the svd state's model) and run ``ServingPass.history``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model.config import RankerConfig
from model.flops import PassFlops, attention_flops
from model.layers import log_weights, principal_basis, project_rows
from model.modes.base import HeadFactory, RankerInputError, ScoreRequest
from model.modes.inputs import UserSource
from model.modes.packing import Buffers, PackedBatch, candidate_layout, fill, fill_candidates
from model.serving import Scorable, ServingPass

__all__ = ["HistoryMode"]


@dataclass(frozen=True)
class HistoryMode:
    """Attention over the logged events; ``projected``: on span(V_r) first (`svd_exact`).

    Batch arrays: ``items``, ``actions`` (B, N_max) rows, ``weights`` (B, N_max) recency
    weights (1 in the padding), ``mask`` (B, N_max) bool, and for a projected mode
    ``basis`` (B, d, r_max) (zero columns where a request's r is smaller).
    """

    name: str
    projected: bool
    state_kind: str = "svd"
    reads_log: bool = True
    head: HeadFactory | None = None

    def attend(
        self, ranker: Scorable, cand: Tensor, rows: Tensor, mask: Tensor, weights: Tensor
    ) -> Tensor:
        if self.projected:
            basis = principal_basis(rows, mask, weights, ranker.config.rank)  # (B, d, r)
            rows = project_rows(rows, basis)
        return ranker.attn(cand, rows, mask, log_weights(weights))

    def request(self, candidates: Tensor, user: UserSource) -> ScoreRequest:
        """The log's rows and weights, and for a projected mode V_r of the factors (zeros
        for a user with no history)."""
        events = user.events()
        basis = None
        if self.projected:
            basis = torch.from_numpy(np.ascontiguousarray(user.basis(), dtype=np.float32))
        return ScoreRequest(
            candidates,
            history_items=torch.from_numpy(events.items),
            history_actions=torch.from_numpy(events.actions),
            weights=torch.from_numpy(np.asarray(events.weights, dtype=np.float32)),
            basis=basis,
        )

    def example(self, config: RankerConfig, rank: int, candidates: Tensor) -> ScoreRequest:
        history = torch.arange(candidates.shape[0], dtype=torch.long)
        basis = torch.eye(config.dim)[:, :rank] if self.projected else None
        return ScoreRequest(candidates, history_items=history, basis=basis)

    def pack(self, requests: Sequence[ScoreRequest], dim: int, buffers: Buffers) -> PackedBatch:
        if self.projected and any(req.basis is None for req in requests):
            raise RankerInputError(f"{self.name} mode needs a (d, r) basis per request")
        sizes = [0 if q.history_items is None else int(q.history_items.shape[0]) for q in requests]
        B, N = len(requests), max(sizes)
        layout = candidate_layout([q.candidates for q in requests])
        layout += [
            ("items", (B, N), np.int64),
            ("actions", (B, N), np.int64),
            ("weights", (B, N), np.float32),
            ("mask", (B, N), np.bool_),
        ]
        bases = [q.basis for q in requests if q.basis is not None] if self.projected else []
        if bases:
            layout.append(("basis", (B, dim, max(int(b.shape[1]) for b in bases)), np.float32))
        packed = buffers.pack(layout)
        host = packed.host
        fill_candidates(host, [q.candidates for q in requests])
        fill(host["items"], [q.history_items for q in requests])
        fill(host["actions"], [q.history_actions for q in requests])
        host["weights"][...] = 1.0
        for row, q, n in zip(host["weights"], requests, sizes, strict=True):
            if q.weights is not None:
                row[:n] = q.weights.float().numpy(force=True)
        host["mask"][:] = np.arange(N)[None, :] < np.asarray(sizes)[:, None]
        if bases:
            host["basis"][...] = 0
            for row, basis in zip(host["basis"], bases, strict=True):
                row[:, : basis.shape[1]] = basis.float().numpy(force=True)
        return packed

    def score(self, serving: ServingPass, inputs: dict[str, Tensor]) -> Tensor:
        return serving.history(
            inputs["rows"],
            (inputs["items"], inputs["actions"]),
            inputs["mask"],
            log_weights(inputs["weights"]),
            inputs.get("basis"),
        )

    def flops(self, config: RankerConfig, candidates: int, rank: int, history: int) -> PassFlops:
        """Over ``history`` (N) events, projected on rank r first for `svd_exact`."""
        return attention_flops(
            config, candidates, tokens=history, projected_rank=rank if self.projected else 0
        )
