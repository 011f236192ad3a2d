"""The ranker's arithmetic on the serving path, counted: the numerator of the roofline.

A serving pass gathers per-item tables (``model.serving``: the query projection and the
candidate's share of the MLP's first layer), so what is left per candidate is the
attention, W_O and the MLP after that share. Counts are multiply-adds × 2 (one FLOP each),
of the reference formulation (:meth:`model.ranker.Ranker.score_outputs`); a fused pass that
does more arithmetic to run fewer, larger GEMMs is still measured against these counts.
Element-wise work (softmax, GELU, gathers) is not counted: it is what the roofline leaves out.
"""

from __future__ import annotations

from typing import NamedTuple

from model.config import RankerConfig

__all__ = ["PassFlops", "serving_flops"]


class PassFlops(NamedTuple):
    """FLOPs of one request on the serving path, split by where they are spent.

    Attributes:
        context: per request, independent of M: the K and V projections of the context
            tokens (r interests, or the N events of `svd_exact` / `softmax`, plus the rank-r
            projection of `svd_exact`).
        attention: per request, M × (scores + weighted values) over the context.
        dense: per request, M × (W_O + the MLP after the per-item share of its first layer).
    """

    context: int
    attention: int
    dense: int

    @property
    def total(self) -> int:
        return self.context + self.attention + self.dense


def serving_flops(
    config: RankerConfig, mode: str, candidates: int, rank: int, history: int = 0
) -> PassFlops:
    """FLOPs of scoring ``candidates`` (M) for one user in ``mode``.

    Args:
        config: the ranker's shapes (d, hidden width).
        mode: ``svd`` (context = ``rank`` interest tokens), ``svd_exact`` or ``softmax``
            (context = ``history`` events N).
        rank: served r.
        history: N, for the history modes.
    """
    d, hidden = config.dim, config.mlp_hidden
    tokens = rank if mode == "svd" else history
    context = 2 * 2 * tokens * d * d  # K = T W_Kᵀ and V = T W_Vᵀ
    if mode == "svd_exact":
        context += 2 * 2 * history * d * rank  # X V_r V_rᵀ
    attention = candidates * 2 * 2 * tokens * d  # Q Kᵀ and A V over all heads
    per_candidate = (
        2 * d * d  # W_O
        + 2 * (2 * d) * hidden  # fc1 on [o, e ⊙ o] (the e part is a per-item table)
        + 2 * hidden * (hidden // 2)  # fc2
        + 2 * (hidden // 2)  # out
    )
    return PassFlops(context=context, attention=attention, dense=candidates * per_candidate)
