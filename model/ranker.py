"""The SOLAR ranker: score(c | user) = MLP([e_c, o_c, e_c ⊙ o_c]) with o_c the attention output.

Event rows are x_j = E_item[i_j] + E_action[a_j] (d-vectors); candidates are E_item[c].
One :class:`TargetAttention` is shared by the `svd`, `svd_exact` and `softmax` modes, so a
model trained in one of them can be served in any other; `linear`, `elastic` and `mean`
are the baselines of the evaluation and own extra layers. What a mode computes, in training
and in serving, is its entry of the registry (``model.modes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from model.config import RankerConfig
from model.heads import ScoringMLP
from model.layers import TargetAttention, interest_tokens
from model.modes import HostBuffers, RankerInputError, ScoreRequest, mode_spec, served_modes
from model.modes.base import FromInterests
from model.repeats import REPEAT_FEATURES, repeat_counts, repeat_features
from model.serving import ServingPass

__all__ = [
    "NO_ACTION",
    "OOV_ITEM",
    "HistoryBatch",
    "Ranker",
    "RankerInputError",
    "ScoreRequest",
    "TrainingLogits",
    "baseline_heads",
]

OOV_ITEM = 0
NO_ACTION = 0


class TrainingLogits(NamedTuple):
    """What a training step scores: the trained mode's logits (B, M) and the svd read-out's
    (B, M), or None for a model without one."""

    trained: Tensor
    readout: Tensor | None


@dataclass(frozen=True)
class HistoryBatch:
    """Padded histories of B users.

    Attributes:
        items: (B, N) long item rows (0 = OOV / padding).
        actions: (B, N) long action rows.
        mask: (B, N) bool, True for real events.
        weights: (B, N) float recency weights w_j (1 without decay).
    """

    items: Tensor
    actions: Tensor
    mask: Tensor
    weights: Tensor


class Ranker(nn.Module):
    """Embeddings, target attention in any mode, and the scoring MLP."""

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.item_emb = nn.Embedding(config.n_items, d)
        self.action_emb = nn.Embedding(config.n_actions, d)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        nn.init.zeros_(self.action_emb.weight)
        self.attn = TargetAttention(d, config.heads)  # shared by svd, svd_exact, softmax
        self.baselines = baseline_heads(config)  # {trained mode: head} for a baseline mode
        extra = REPEAT_FEATURES if config.repeat_buckets else 0
        self.mlp = ScoringMLP(d, config.mlp_hidden, mode_spec(config.mode).channels, extra)
        # Made last, so the random draws of every other weight are a plain lifelong model's.
        self.readout = ScoringMLP(d, config.mlp_hidden) if config.svd_readout else None

    # ------------------------------------------------------------------ embeddings
    def embed_events(self, items: Tensor, actions: Tensor) -> Tensor:
        """(…, N) item and action rows → (…, N, d) event rows x_j."""
        return self.item_emb(items) + self.action_emb(actions)

    def embed_items(self, items: Tensor) -> Tensor:
        """(…, M) candidate rows → (…, M, d)."""
        return self.item_emb(items)

    def served_modes(self) -> tuple[str, ...]:
        """The /rank modes this model serves (``model.modes.served_modes``)."""
        return served_modes(self.config.mode, self.config.svd_readout)

    def reads_out(self, mode: str) -> bool:
        """Whether ``mode`` is scored by the svd read-out rather than the trained MLP: an svd
        family mode of a `lifelong` model trained with ``svd_readout``."""
        return self.readout is not None and mode_spec(mode).state_kind == "svd"

    def score_outputs(
        self, cand: Tensor, out: Tensor, extra: Tensor | None = None, mlp: ScoringMLP | None = None
    ) -> Tensor:
        """cand (B, M, d), out (B, M, C·d) → logits (B, M): the scoring MLP (``mlp``, default
        the trained one) on [e_c, o_c, e_c ⊙ o_c] for each of the C attention outputs o_c (one
        per channel), then the ``extra`` (B, M, F) per-candidate features (repeat features)."""
        parts = [cand]
        for o in out.split(cand.shape[-1], dim=-1):
            parts += [o, cand * o]
        if extra is not None:
            parts.append(extra.to(cand.dtype))
        return (self.mlp if mlp is None else mlp)(torch.cat(parts, dim=-1))

    def repeat_features(self, candidates: Tensor, history: HistoryBatch) -> Tensor | None:
        """(B, M, 2) repeat features of candidates (B, M) in their contexts (training path,
        ``model.repeats``), or None for a model without a repeat channel."""
        buckets = self.config.repeat_buckets
        if not buckets:
            return None
        weights = history.weights * history.mask.to(history.weights.dtype)
        counts, total = repeat_counts(candidates, history.items, weights, buckets)
        return repeat_features(counts, total)

    def serving_pass(
        self, mode: str | None = None, dtype: torch.dtype = torch.float32
    ) -> ServingPass:
        """The fused serving pass of ``mode`` (default: the trained one) in ``dtype``, through
        the MLP that scores it: the one place a mode picks its MLP's pass (made once per MLP
        and dtype, follows weight updates; a read-out pass shares the trained pass's
        per-item table and attention weights)."""
        readout = self.reads_out(mode or self.config.mode)
        passes: dict[tuple[bool, torch.dtype], ServingPass] = self.__dict__.setdefault(
            "_serving", {}
        )
        serving = passes.get((readout, dtype))
        if serving is None:
            trained = self.serving_pass(self.config.mode, dtype) if readout else None
            serving = passes[readout, dtype] = ServingPass(self, dtype, readout, shares=trained)
        return serving

    # ------------------------------------------------------------------ training path
    def attend(self, mode: str, cand: Tensor, history: HistoryBatch) -> Tensor:
        """Attention output o (B, M, C·d) for candidates cand (B, M, d) in any mode (C = the
        mode's ``channels``: 2 for `lifelong`, else 1)."""
        rows = self.embed_events(history.items, history.actions)  # (B, N, d)
        return mode_spec(mode).attend(self, cand, rows, history.mask, history.weights)

    def forward(self, candidates: Tensor, history: HistoryBatch, mode: str | None = None) -> Tensor:
        """candidates (B, M) long → logits (B, M), in ``mode`` (default: the trained mode;
        an svd family mode of a lifelong model with a read-out: through the read-out)."""
        mode = mode or self.config.mode
        cand = self.embed_items(candidates)  # (B, M, d)
        out = self.attend(mode, cand, history)
        if self.reads_out(mode):
            return self.score_outputs(cand, out, mlp=self.readout)
        return self.score_outputs(cand, out, self.repeat_features(candidates, history))

    def training_logits(self, candidates: Tensor, history: HistoryBatch) -> TrainingLogits:
        """candidates (B, M) long → the trained mode's logits (B, M) and, for a lifelong model
        with a read-out, the read-out's `svd` logits (B, M) on the same interest tokens (one
        batch SVD), detached: the read-out's loss trains the read-out alone, never the
        embeddings or the attention the lifelong model learns."""
        if self.readout is None:
            return TrainingLogits(self(candidates, history), None)
        lifelong, svd = mode_spec(self.config.mode), mode_spec("svd")
        if not (isinstance(lifelong, FromInterests) and isinstance(svd, FromInterests)):
            raise TypeError("an svd read-out needs modes that read the interest tokens")
        cand = self.embed_items(candidates)  # (B, M, d)
        rows = self.embed_events(history.items, history.actions)  # (B, N, d)
        interests = interest_tokens(rows, history.mask, history.weights, self.config.rank)
        out = lifelong.attend_interests(self, cand, interests, rows, history.mask)
        logits = self.score_outputs(cand, out, self.repeat_features(candidates, history))
        with torch.no_grad():
            svd_out = svd.attend_interests(self, cand, interests, rows, history.mask)
        return TrainingLogits(logits, self.score_outputs(cand.detach(), svd_out, mlp=self.readout))

    # ------------------------------------------------------------------ serving path
    def score_requests(self, mode: str, requests: Sequence[ScoreRequest]) -> list[Tensor]:
        """Score many users in one batched pass; returns one (M_i,) logit tensor per request.

        The reference of the service's scorer: the same packing (the mode's ``pack``, here
        into plain host arrays) and the same fused pass (:class:`model.serving.ServingPass`),
        without the top k.
        """
        served = self.served_modes()
        if mode not in served:
            raise RankerInputError(f"serving mode must be one of {served}, got {mode!r}")
        if not requests:
            return []
        spec = mode_spec(mode)
        packed = spec.pack(requests, self.config.dim, HostBuffers(self.item_emb.weight.device))
        logits = spec.score(self.serving_pass(mode), packed.send())  # (B, M_max)
        return [logits[i, : req.candidates.shape[0]].clone() for i, req in enumerate(requests)]


def baseline_heads(config: RankerConfig) -> nn.ModuleDict:
    """The head of the trained mode when it is a baseline (else empty), keyed by mode."""
    head = mode_spec(config.mode).head
    return nn.ModuleDict({} if head is None else {config.mode: head(config)})
