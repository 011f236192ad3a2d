"""Modes whose candidates attend to a few context tokens: `svd` and `elastic`.

`svd` (SOLAR SVD-Attention): the r interest tokens of the user's factors, live ones only
(σ_k > 1e-6·σ_1: the others are masked in training too), followed in the hybrid
(``recent_tokens`` = k) by the rows of the user's k latest events (the svd state builder
makes them). `elastic`: the k tokens of
the ELASTIC dispatcher state. Both go through the shared target attention in one pass,
``ServingPass.svd``; requests of several token counts are padded and masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model.config import RankerConfig
from model.flops import PassFlops, attention_flops
from model.heads import ElasticHead
from model.layers import Interests
from model.modes.base import FromInterests, HeadFactory, RankerInputError, ScoreRequest, own_head
from model.modes.inputs import UserSource
from model.modes.packing import (
    TOKEN_BUCKET,
    Buffers,
    PackedBatch,
    bucket,
    candidate_layout,
    fill,
    fill_candidates,
)
from model.serving import Scorable, ServingPass

__all__ = ["ElasticMode", "SvdMode", "TokenMode"]


class TokenMode:
    """Packing and pass of the token modes: ``tokens`` (B, T, d) and ``token_mask`` (B, T)
    bool, T = the most tokens of a request rounded up to ``TOKEN_BUCKET`` (padding masked)."""

    name: str
    reads_log = False
    channels = 1

    def request(self, candidates: Tensor, user: UserSource) -> ScoreRequest:
        """The tokens the state builder reads of the user's state (``features``): `elastic`
        its k dispatcher tokens (`svd` reads ``tokens``)."""
        tokens = torch.from_numpy(user.features().astype(np.float32))  # (T, d)
        return ScoreRequest(candidates, interests=tokens)

    def pack(self, requests: Sequence[ScoreRequest], dim: int, buffers: Buffers) -> PackedBatch:
        tokens: list[Tensor] = []
        for req in requests:
            if req.interests is None or req.interests.dim() != 2 or req.interests.shape[1] != dim:
                raise RankerInputError(f"{self.name} needs (T, {dim}) interests per request")
            tokens.append(req.interests)
        counts = [int(t.shape[0]) for t in tokens]
        B, T = len(requests), bucket(max(counts), TOKEN_BUCKET)
        layout = candidate_layout([q.candidates for q in requests])
        layout.append(("tokens", (B, T, dim), np.float32))
        layout.append(("token_mask", (B, T), np.bool_))  # always: one kernel, one shape set
        packed = buffers.pack(layout)
        host = packed.host
        fill_candidates(host, [q.candidates for q in requests])
        fill(host["tokens"], [t.float() for t in tokens])
        host["token_mask"][:] = np.arange(T)[None, :] < np.asarray(counts)[:, None]
        return packed

    def score(self, serving: ServingPass, inputs: dict[str, Tensor]) -> Tensor:
        return serving.svd(inputs["rows"], inputs["tokens"], inputs.get("token_mask"))


@dataclass(frozen=True)
class SvdMode(FromInterests, TokenMode):
    """`svd`: candidates attend to the user's live interest tokens (+ the hybrid's rows)."""

    name: str = "svd"
    state_kind: str = "svd"
    head: HeadFactory | None = None

    def request(self, candidates: Tensor, user: UserSource) -> ScoreRequest:
        """The user's live interest tokens, then the hybrid's latest rows ((r, d) zeros for
        no history, so o = 0), read by ``tokens``: also of a lifelong state (its read-out)."""
        tokens = torch.from_numpy(user.tokens().astype(np.float32))  # (T, d)
        return ScoreRequest(candidates, interests=tokens)

    def attend_interests(
        self, ranker: Scorable, cand: Tensor, interests: Interests, rows: Tensor, mask: Tensor
    ) -> Tensor:
        """o (B, M, d) from the users' interest tokens already made (``interest_tokens``)."""
        tokens, live = interests  # (B, r, d), (B, r)
        k = ranker.config.recent_tokens
        if k:  # hybrid: the last k events (histories are right-aligned) join the tokens
            tokens = torch.cat((tokens, rows[:, -k:]), dim=1)  # (B, r + k', d)
            live = torch.cat((live, mask[:, -k:]), dim=1)
        return ranker.attn(cand, tokens, live)

    def example(self, config: RankerConfig, rank: int, candidates: Tensor) -> ScoreRequest:
        return ScoreRequest(candidates, interests=torch.randn(rank, config.dim))

    def flops(self, config: RankerConfig, candidates: int, rank: int, history: int) -> PassFlops:
        """Over ``rank`` tokens (a hybrid's k rows are not counted, as before the registry)."""
        return attention_flops(config, candidates, tokens=rank)


@dataclass(frozen=True)
class ElasticMode(TokenMode):
    """`elastic`: candidates attend to the k tokens of the user's dispatcher state."""

    name: str = "elastic"
    state_kind: str = "elastic"
    head: HeadFactory | None = ElasticHead

    def attend(
        self, ranker: Scorable, cand: Tensor, rows: Tensor, mask: Tensor, weights: Tensor
    ) -> Tensor:
        return own_head(ranker, self.name)(ranker.attn, cand, rows, mask, weights)

    def example(self, config: RankerConfig, rank: int, candidates: Tensor) -> ScoreRequest:
        return ScoreRequest(candidates, interests=torch.randn(config.elastic_tokens, config.dim))

    def flops(self, config: RankerConfig, candidates: int, rank: int, history: int) -> PassFlops:
        """Over the k dispatcher tokens (the dispatcher itself runs when events are applied)."""
        return attention_flops(config, candidates, tokens=config.elastic_tokens)
