"""The ranker's named sub-modules: the scoring MLP and the heads of the baseline modes.

The `svd`, `svd_exact` and `softmax` modes share the ranker's :class:`TargetAttention`; each
baseline mode (`linear`, `elastic`, `mean`) owns the extra layers below (its registry entry,
``model.modes``, names its head), created only for a model trained in that mode and
registered under the mode's name (``ranker.baselines[mode]``).
Every baseline head maps (shared attention, candidates, event rows, mask, weights) to the
attention output o (B, M, d).
"""

from __future__ import annotations

from torch import Tensor, nn

from model.config import RankerConfig
from model.layers import ElasticDispatcher, LinearTargetAttention, TargetAttention, log_weights

__all__ = ["BaselineHead", "ElasticHead", "LinearHead", "MeanHead", "ScoringMLP"]


class ScoringMLP(nn.Module):
    """score = out(gelu(fc2(gelu(fc1([e_c, o_c, e_c ⊙ o_c]))))): (…, 3d) → (…,) logits.

    With ``channels`` = C attention outputs (`lifelong`: a long-term and a short-term channel)
    the input is [e_c, o¹_c, e_c ⊙ o¹_c, …, o^C_c, e_c ⊙ o^C_c]: (…, (1 + 2C)·d), followed by
    ``extra`` per-candidate features (`lifelong`'s repeat features, ``model.repeats``).
    """

    def __init__(self, dim: int, hidden: int, channels: int = 1, extra: int = 0) -> None:
        super().__init__()
        self.fc1 = nn.Linear((1 + 2 * channels) * dim + extra, hidden)
        self.fc2 = nn.Linear(hidden, hidden // 2)
        self.out = nn.Linear(hidden // 2, 1)
        self.act = nn.GELU()

    def forward(self, features: Tensor) -> Tensor:
        """features (…, (1 + 2C)·d + extra) → logits (…)."""
        return self.after_fc1(self.fc1(features))

    def after_fc1(self, hidden: Tensor) -> Tensor:
        """The layers after ``fc1``: pre-activations (…, hidden) → logits (…).

        Serving computes fc1 itself from per-item tables (``model.serving``).
        """
        return self.out(self.act(self.fc2(self.act(hidden)))).squeeze(-1)


class BaselineHead(nn.Module):
    """A baseline mode's attention output; subclasses implement :meth:`forward`."""

    def forward(
        self, attn: TargetAttention, cand: Tensor, rows: Tensor, mask: Tensor, weights: Tensor
    ) -> Tensor:
        """cand (B, M, d), rows (B, N, d), mask (B, N) bool, weights (B, N) → o (B, M, d)."""
        raise NotImplementedError


class LinearHead(BaselineHead):
    """`linear`: FuXi-Linear-style decayed elu+1 attention with projections of its own."""

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        self.attention = LinearTargetAttention(config.dim, config.heads)

    def forward(
        self, attn: TargetAttention, cand: Tensor, rows: Tensor, mask: Tensor, weights: Tensor
    ) -> Tensor:
        return self.attention(cand, rows, mask, weights)


class ElasticHead(BaselineHead):
    """`elastic`: k learned dispatcher queries compress the events; candidates attend to them
    through the shared target attention, as in `svd`."""

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        self.dispatcher = ElasticDispatcher(config.dim, config.heads, config.elastic_tokens)

    def forward(
        self, attn: TargetAttention, cand: Tensor, rows: Tensor, mask: Tensor, weights: Tensor
    ) -> Tensor:
        tokens = self.dispatcher(rows, mask, log_weights(weights))  # (B, k, d)
        k = tokens.shape[1]
        return attn(cand, tokens, mask.any(dim=1, keepdim=True).expand(-1, k))


class MeanHead(BaselineHead):
    """`mean`: the weighted mean of the event rows, projected, for every candidate alike."""

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.dim, config.dim, bias=False)

    def forward(
        self, attn: TargetAttention, cand: Tensor, rows: Tensor, mask: Tensor, weights: Tensor
    ) -> Tensor:
        w = weights * mask.to(weights.dtype)  # (B, N)
        pooled = (rows * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-12)
        return self.proj(pooled).unsqueeze(1).expand_as(cand)  # (B, M, d)
