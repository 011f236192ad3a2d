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

import torch
from torch import Tensor, nn

from model.config import RankerConfig
from model.heads import ScoringMLP
from model.layers import TargetAttention
from model.modes import HostBuffers, RankerInputError, ScoreRequest, mode_spec, served_modes
from model.repeats import REPEAT_FEATURES, repeat_counts, repeat_features
from model.serving import ServingPass

__all__ = [
    "NO_ACTION",
    "OOV_ITEM",
    "HistoryBatch",
    "Ranker",
    "RankerInputError",
    "ScoreRequest",
    "baseline_heads",
]

OOV_ITEM = 0
NO_ACTION = 0


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

    # ------------------------------------------------------------------ embeddings
    def embed_events(self, items: Tensor, actions: Tensor) -> Tensor:
        """(…, N) item and action rows → (…, N, d) event rows x_j."""
        return self.item_emb(items) + self.action_emb(actions)

    def embed_items(self, items: Tensor) -> Tensor:
        """(…, M) candidate rows → (…, M, d)."""
        return self.item_emb(items)

    def score_outputs(self, cand: Tensor, out: Tensor, extra: Tensor | None = None) -> Tensor:
        """cand (B, M, d), out (B, M, C·d) → logits (B, M): the scoring MLP on
        [e_c, o_c, e_c ⊙ o_c] for each of the C attention outputs o_c (one per channel),
        then the ``extra`` (B, M, F) per-candidate features (the repeat features)."""
        parts = [cand]
        for o in out.split(cand.shape[-1], dim=-1):
            parts += [o, cand * o]
        if extra is not None:
            parts.append(extra.to(cand.dtype))
        return self.mlp(torch.cat(parts, dim=-1))

    def repeat_features(self, candidates: Tensor, history: HistoryBatch) -> Tensor | None:
        """(B, M, 2) repeat features of candidates (B, M) in their contexts (training path,
        ``model.repeats``), or None for a model without a repeat channel."""
        buckets = self.config.repeat_buckets
        if not buckets:
            return None
        weights = history.weights * history.mask.to(history.weights.dtype)
        counts, total = repeat_counts(candidates, history.items, weights, buckets)
        return repeat_features(counts, total)

    def serving_pass(self) -> ServingPass:
        """The fused float32 serving pass of this ranker (made once, follows weight updates)."""
        serving: ServingPass | None = self.__dict__.get("_serving")
        if serving is None:
            serving = self.__dict__["_serving"] = ServingPass(self)
        return serving

    # ------------------------------------------------------------------ training path
    def attend(self, mode: str, cand: Tensor, history: HistoryBatch) -> Tensor:
        """Attention output o (B, M, C·d) for candidates cand (B, M, d) in any mode (C = the
        mode's ``channels``: 2 for `lifelong`, else 1)."""
        rows = self.embed_events(history.items, history.actions)  # (B, N, d)
        return mode_spec(mode).attend(self, cand, rows, history.mask, history.weights)

    def forward(self, candidates: Tensor, history: HistoryBatch, mode: str | None = None) -> Tensor:
        """candidates (B, M) long → logits (B, M), in ``mode`` (default: the trained mode)."""
        cand = self.embed_items(candidates)  # (B, M, d)
        out = self.attend(mode or self.config.mode, cand, history)
        return self.score_outputs(cand, out, self.repeat_features(candidates, history))

    # ------------------------------------------------------------------ serving path
    def score_requests(self, mode: str, requests: Sequence[ScoreRequest]) -> list[Tensor]:
        """Score many users in one batched pass; returns one (M_i,) logit tensor per request.

        The reference of the service's scorer: the same packing (the mode's ``pack``, here
        into plain host arrays) and the same fused pass (:class:`model.serving.ServingPass`),
        without the top k.
        """
        served = served_modes(self.config.mode)
        if mode not in served:
            raise RankerInputError(f"serving mode must be one of {served}, got {mode!r}")
        if not requests:
            return []
        spec = mode_spec(mode)
        packed = spec.pack(requests, self.config.dim, HostBuffers(self.item_emb.weight.device))
        logits = spec.score(self.serving_pass(), packed.send())  # (B, M_max)
        return [logits[i, : req.candidates.shape[0]].clone() for i, req in enumerate(requests)]


def baseline_heads(config: RankerConfig) -> nn.ModuleDict:
    """The head of the trained mode when it is a baseline (else empty), keyed by mode."""
    head = mode_spec(config.mode).head
    return nn.ModuleDict({} if head is None else {config.mode: head(config)})
