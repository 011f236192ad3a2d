"""Target-attention kernels: candidates (queries) attend to a user's history.

Single-head, projection-free kernels (the Python API of docs/DESIGN.md §9); each takes q (M, d) or
(B, M, d) and returns the same shape:

* :func:`svd_attention` — SOLAR SVD-Attention over r interest tokens, O(M·r·d).
* :func:`svd_exact_attention` — softmax over all N events through the rank-r basis,
  O(M·N·r + N·d·r); equal to :func:`softmax_attention` when rank(X) ≤ r.
* :func:`softmax_attention` — full target attention over X, O(M·N·d): the exact baseline.
* :func:`linear_attention` — elu+1 linear attention with decayed state, O(N·d² + M·d²).

All scale logits by 1/sqrt(d) and accept optional per-event ``weights`` (recency, w_j > 0),
which enter softmax as a log w_j bias and linear attention as a state weight.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class AttentionShapeError(ValueError):
    """Inputs to an attention kernel have incompatible shapes."""


def _check(q: Tensor, kv: Tensor, name: str) -> None:
    if q.dim() not in (2, 3) or kv.dim() != q.dim():
        raise AttentionShapeError(
            f"q {tuple(q.shape)} and {name} {tuple(kv.shape)} must both be 2-D or both 3-D"
        )
    if q.shape[-1] != kv.shape[-1]:
        raise AttentionShapeError(f"q has d={q.shape[-1]}, {name} has d={kv.shape[-1]}")


def _sdpa(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """F.scaled_dot_product_attention on (M, E) or (B, M, E) inputs, run as (B, 1, M, E).

    PyTorch's fused CPU kernel (flash attention) only takes 4-D inputs: 2-D and 3-D ones fall
    back to the unfused math path, 3-5× slower at N = 10,000 (and more memory, M×N logits).
    ``bias``: a bool or additive float mask of shape (.., 1 or M, N), as many leading dims as q.
    """
    batched = q.dim() == 3

    def four(x: Tensor) -> Tensor:
        return x.unsqueeze(-3) if batched else x[None, None]  # (B or 1, 1, L, E)

    attn_mask = None if bias is None else four(bias)
    out = F.scaled_dot_product_attention(
        four(q), four(k), four(v), attn_mask=attn_mask, scale=scale
    )
    return out.squeeze(-3) if batched else out[0, 0]  # (.., M, E)


def _log_bias(weights: Tensor | None, q: Tensor) -> Tensor | None:
    """(.., N) weights → an additive (.., 1, N) logit bias log w, broadcast over queries."""
    if weights is None:
        return None
    return torch.log(weights.to(q.dtype)).unsqueeze(-2)


def svd_attention(q: Tensor, interests: Tensor, mask: Tensor | None = None) -> Tensor:
    """SVD-Attention: softmax over the r interest tokens I (from the user's factors).

    Args:
        q: (M, d) or (B, M, d) candidate queries.
        interests: (r, d) or (B, r, d) tokens I = diag(σ_r) V_rᵀ / sqrt(n_eff); keys = values = I.
        mask: optional (B, r) bool, True for real tokens (padding when batching ranks).
    Returns:
        (M, d) or (B, M, d) attention output.
    """
    _check(q, interests, "interests")
    attn_mask = None if mask is None else mask.unsqueeze(-2)  # (B, 1, r)
    return _sdpa(q, interests, interests, attn_mask)


def svd_exact_attention(q: Tensor, X: Tensor, V_r: Tensor, weights: Tensor | None = None) -> Tensor:
    """Softmax over all N events, computed in the rank-r space spanned by V_r.

    With Z = X V_r (N, r): logits = (q V_r) Zᵀ / sqrt(d) (+ log w), O = softmax(logits) Z V_rᵀ.
    Equals :func:`softmax_attention` when the rows of X lie in span(V_r).

    Args:
        q: (M, d) or (B, M, d). X: (N, d) or (B, N, d). V_r: (d, r) or (B, d, r), orthonormal.
        weights: optional (N,) or (B, N) positive recency weights.
    """
    _check(q, X, "X")
    if V_r.shape[-2] != q.shape[-1]:
        raise AttentionShapeError(f"V_r {tuple(V_r.shape)} must be (d, r) with d={q.shape[-1]}")
    Z = X @ V_r  # (.., N, r)
    q_r = q @ V_r  # (.., M, r)
    scale = 1.0 / math.sqrt(q.shape[-1])  # logits use d, not SDPA's default r
    out_r = _sdpa(q_r, Z, Z, _log_bias(weights, q), scale)  # (.., M, r)
    return out_r @ V_r.transpose(-1, -2)  # (.., M, d)


def softmax_attention(q: Tensor, X: Tensor, weights: Tensor | None = None) -> Tensor:
    """Full target attention: softmax(q Xᵀ / sqrt(d) + log w) X.

    Args:
        q: (M, d) or (B, M, d). X: (N, d) or (B, N, d). weights: optional (N,) or (B, N).
    """
    _check(q, X, "X")
    return _sdpa(q, X, X, _log_bias(weights, q))


def elu_feature(x: Tensor) -> Tensor:
    """The elu+1 feature map φ of linear attention (positive)."""
    return F.elu(x) + 1.0


def linear_attention(q: Tensor, X: Tensor, weights: Tensor | None = None) -> Tensor:
    """Linear attention φ(q) S / φ(q) z with S = Σ w_j φ(x_j) x_jᵀ, z = Σ w_j φ(x_j).

    The state (S, z) is O(d²) and absorbs a new event in O(d²) (decay multiplies it).

    Args:
        q: (M, d) or (B, M, d). X: (N, d) or (B, N, d). weights: optional (N,) or (B, N).
    """
    _check(q, X, "X")
    phi_k = elu_feature(X)  # (.., N, d)
    if weights is not None:
        phi_k = phi_k * weights.unsqueeze(-1).to(X.dtype)
    state = phi_k.transpose(-1, -2) @ X  # (.., d, d)
    norm = phi_k.sum(dim=-2, keepdim=True)  # (.., 1, d)
    phi_q = elu_feature(q)  # (.., M, d)
    denom = (phi_q * norm).sum(dim=-1, keepdim=True).clamp_min(1e-12)  # (.., M, 1)
    return (phi_q @ state) / denom
