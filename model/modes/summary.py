"""Modes whose candidates read a constant-size state summary: `linear` and `mean`.

`linear` (FuXi-Linear's retention channel): per head [S_h | z_h], read through the candidate's
elu+1 query. `mean`: the weighted mean row, projected, the same output for every candidate.
Each is served only by a model trained in it (its head holds the layers), through
``ServingPass.state`` with the outputs of ``model.state_pass``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor

from model.config import RankerConfig
from model.flops import PassFlops, mlp_flops
from model.heads import BaselineHead, LinearHead, MeanHead
from model.modes.base import HeadFactory, RankerInputError, ScoreRequest, own_head
from model.modes.inputs import UserSource
from model.modes.packing import Buffers, PackedBatch, candidate_layout, fill_candidates
from model.serving import Scorable, ServingPass
from model.state_pass import linear_outputs, mean_outputs

__all__ = ["LinearMode", "MeanMode", "SummaryMode"]


class SummaryMode:
    """Packing and pass of the summary modes: ``summary`` (B, ...) one per request, all of
    one shape. Subclasses give the attention output of the summaries (:meth:`outputs`)."""

    name: str
    reads_log = False

    def outputs(self, head: BaselineHead, cand: Tensor, summary: Tensor) -> Tensor:
        """cand (B, M, d) and summaries (B, ...) in the pass's dtype → o (B, M, d)."""
        raise NotImplementedError

    def attend(
        self, ranker: Scorable, cand: Tensor, rows: Tensor, mask: Tensor, weights: Tensor
    ) -> Tensor:
        return own_head(ranker, self.name)(ranker.attn, cand, rows, mask, weights)

    def request(self, candidates: Tensor, user: UserSource) -> ScoreRequest:
        return ScoreRequest(
            candidates, summary=torch.from_numpy(user.features().astype(np.float32))
        )

    def pack(self, requests: Sequence[ScoreRequest], dim: int, buffers: Buffers) -> PackedBatch:
        summaries = [req.summary for req in requests]
        shapes = {tuple(s.shape) for s in summaries if s is not None}
        if any(s is None for s in summaries) or len(shapes) != 1:
            raise RankerInputError(f"{self.name} needs one summary of one shape per request")
        layout = candidate_layout([q.candidates for q in requests])
        layout.append(("summary", (len(requests), *shapes.pop()), np.float32))
        packed = buffers.pack(layout)
        fill_candidates(packed.host, [q.candidates for q in requests])
        for row, summary in zip(packed.host["summary"], summaries, strict=True):
            assert summary is not None
            row[...] = summary.float().numpy(force=True)
        return packed

    def score(self, serving: ServingPass, inputs: dict[str, Tensor]) -> Tensor:
        head = own_head(serving.ranker, self.name)
        summary = inputs["summary"]
        return serving.state(
            inputs["rows"], lambda cand: self.outputs(head, cand, summary.to(cand.dtype))
        )


@dataclass(frozen=True)
class LinearMode(SummaryMode):
    """`linear`: φ(q_h) S_h / φ(q_h)·z_h per head, then W_O."""

    name: str = "linear"
    state_kind: str = "linear"
    head: HeadFactory | None = LinearHead

    def outputs(self, head: BaselineHead, cand: Tensor, summary: Tensor) -> Tensor:
        return linear_outputs(cast(LinearHead, head), cand, summary)

    def example(self, config: RankerConfig, rank: int, candidates: Tensor) -> ScoreRequest:
        dh = config.dim // config.heads
        return ScoreRequest(candidates, summary=torch.rand(config.heads, dh, dh + 1))

    def flops(self, config: RankerConfig, candidates: int, rank: int, history: int) -> PassFlops:
        """Per candidate: its own query projection (2d²), φ(q_h) [S_h | z_h] over the heads
        (2d·(d_h + 1)), W_O and the MLP; nothing per request (the state is S)."""
        d, dh = config.dim, config.dim // config.heads
        attention = candidates * (2 * d * d + 2 * d * (dh + 1))
        dense = candidates * (2 * d * d + mlp_flops(config))
        return PassFlops(context=0, attention=attention, dense=dense)


@dataclass(frozen=True)
class MeanMode(SummaryMode):
    """`mean`: the projected weighted mean row, for every candidate alike."""

    name: str = "mean"
    state_kind: str = "mean"
    head: HeadFactory | None = MeanHead

    def outputs(self, head: BaselineHead, cand: Tensor, summary: Tensor) -> Tensor:
        return mean_outputs(cast(MeanHead, head), summary, cand.shape[1])

    def example(self, config: RankerConfig, rank: int, candidates: Tensor) -> ScoreRequest:
        return ScoreRequest(candidates, summary=torch.randn(config.dim))

    def flops(self, config: RankerConfig, candidates: int, rank: int, history: int) -> PassFlops:
        """The projection of the mean row once per request (2d²), then the MLP per candidate
        (no W_O: the projection is the output)."""
        d = config.dim
        return PassFlops(context=2 * d * d, attention=0, dense=candidates * mlp_flops(config))
