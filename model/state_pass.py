"""Attention outputs of the `linear` and `mean` modes from their per-user summaries.

Serving reads these modes from the constant-size states of ``model.states`` instead of the
events: `linear` from [S_h | z_h] per head, `mean` from the weighted mean row. The outputs
equal the training heads' (``model.heads.LinearHead``, ``MeanHead``) on the same history.
(`elastic` needs no pass of its own: its k tokens go through the `svd` token pass.) The
registry's entries (``model.modes.summary``) call them inside ``ServingPass.state``.

Shapes: B requests, M candidates, H heads, d = H·d_h.
"""

from __future__ import annotations

from torch import Tensor

from model.attention import elu_feature
from model.heads import LinearHead, MeanHead

__all__ = ["linear_outputs", "mean_outputs"]


def linear_outputs(head: LinearHead, cand: Tensor, summary: Tensor) -> Tensor:
    """o (B, M, d) of ``model.heads.LinearHead`` for candidates cand (B, M, d) and the states'
    summaries (B, H, d_h, d_h + 1) = [S_h | z_h]: W_O concat_h φ(q_h) S_h / max(φ(q_h)·z_h, 1e-6).
    """
    attention = head.attention
    B, M, d = cand.shape
    H = summary.shape[1]
    dtype = cand.dtype
    q = cand @ attention.w_q.weight.to(dtype).T  # (B, M, d)
    phi_q = elu_feature(q.view(B, M, H, d // H).transpose(1, 2))  # (B, H, M, d_h)
    S, z = summary[..., :-1].to(dtype), summary[..., -1].to(dtype)  # (B, H, d_h, d_h), (B, H, d_h)
    num = phi_q @ S  # (B, H, M, d_h)
    denom = (phi_q @ z.unsqueeze(-1)).clamp_min(1e-6)  # (B, H, M, 1)
    heads = (num / denom).transpose(1, 2).reshape(B, M, d)  # (B, M, d)
    return heads @ attention.w_o.weight.to(dtype).T


def mean_outputs(head: MeanHead, pooled: Tensor, candidates: int) -> Tensor:
    """o (B, M, d) of ``model.heads.MeanHead``: proj of the weighted mean rows pooled (B, d),
    the same for every one of the M candidates."""
    out = pooled.to(head.proj.weight.dtype) @ head.proj.weight.T  # (B, d)
    return out.unsqueeze(1).expand(-1, candidates, -1)
