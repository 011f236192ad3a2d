"""The ranker's arithmetic on the serving path, counted: the numerator of the roofline.

A serving pass gathers per-item tables (``model.serving``: the query projection and the
candidate's share of the MLP's first layer), so what is left per candidate is the
attention, W_O and the MLP after that share. Counts are multiply-adds × 2 (one FLOP each),
of the reference formulation (:meth:`model.ranker.Ranker.score_outputs`); a fused pass that
does more arithmetic to run fewer, larger GEMMs is still measured against these counts.
Element-wise work (softmax, GELU, gathers) is not counted: it is what the roofline leaves out.
Each mode counts its own pass from these pieces (``Mode.flops``;
``model.modes.serving_flops(config, mode, ...)`` looks the mode up).
"""

from __future__ import annotations

from typing import NamedTuple

from model.config import RankerConfig

__all__ = ["PassFlops", "attention_flops", "mlp_flops"]


class PassFlops(NamedTuple):
    """FLOPs of one request on the serving path, split by where they are spent.

    Attributes:
        context: per request, independent of M: the K and V projections of the context
            tokens (r interests, or the N events of `svd_exact` / `softmax`, plus the rank-r
            projection of `svd_exact`), or what a baseline computes once per request.
        attention: per request, M × (scores + weighted values) over the context.
        dense: per request, M × (W_O + the MLP after the per-item share of its first layer).
    """

    context: int
    attention: int
    dense: int

    @property
    def total(self) -> int:
        return self.context + self.attention + self.dense


def mlp_flops(config: RankerConfig) -> int:
    """Per candidate: the MLP after the per-item share of its first layer (fc1 on
    [o, e ⊙ o], the e part being a per-item table), fc2 and the output."""
    d, hidden = config.dim, config.mlp_hidden
    return 2 * (2 * d) * hidden + 2 * hidden * (hidden // 2) + 2 * (hidden // 2)


def attention_flops(
    config: RankerConfig, candidates: int, tokens: int, projected_rank: int = 0
) -> PassFlops:
    """FLOPs of ``candidates`` (M) attending through the shared target attention to ``tokens``
    context rows (r interests, k dispatcher tokens or N events), projected first on a rank
    ``projected_rank`` basis when it is not 0 (`svd_exact`'s X V_r V_rᵀ)."""
    d = config.dim
    context = 2 * 2 * tokens * d * d  # K = T W_Kᵀ and V = T W_Vᵀ
    context += 2 * 2 * tokens * d * projected_rank  # X V_r V_rᵀ
    attention = candidates * 2 * 2 * tokens * d  # Q Kᵀ and A V over all heads
    dense = candidates * (2 * d * d + mlp_flops(config))  # W_O, then the MLP
    return PassFlops(context=context, attention=attention, dense=dense)
