"""Batched multi-head attention layers with projections, used by the ranker.

Shapes: B users, M candidates, T context tokens (r interests or N events), d = H·d_h.
Masks are bool, True for real tokens; a user with no real token gets a zero output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.attention import elu_feature
from model.config import LIVE_TOKEN_RTOL


def _split_heads(x: Tensor, heads: int) -> Tensor:
    B, T, d = x.shape
    return x.view(B, T, heads, d // heads).transpose(1, 2)  # (B, H, T, d_h)


def _merge_heads(x: Tensor) -> Tensor:
    B, H, T, dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * dh)  # (B, T, d)


def log_weights(weights: Tensor) -> Tensor:
    """Recency weights w_j (…, N) → log w_j, the logit bias of a weighted softmax. A weight
    that underflowed to 0 (an event many half-lives old) gets log 1e-30 ≈ -69, not -inf: a
    finite bias, so a user whose every event is that old still has a softmax."""
    return torch.log(weights.clamp_min(1e-30))


def logit_mask(
    mask: Tensor | None, log_weights: Tensor | None, dtype: torch.dtype
) -> Tensor | None:
    """Combine a (B, T) bool mask and (B, T) log-weight bias into a (B, 1, 1, T) float mask."""
    if mask is None and log_weights is None:
        return None
    bias = log_weights.to(dtype) if log_weights is not None else None
    if mask is not None:
        neg = torch.full_like(mask, float("-inf"), dtype=dtype)
        base = bias if bias is not None else torch.zeros_like(neg)
        # Users with no real token keep finite logits (their output is zeroed later).
        empty = ~mask.any(dim=-1, keepdim=True)
        bias = torch.where(mask | empty, base, neg)
    assert bias is not None
    return bias[:, None, None, :]


class _Projected(nn.Module):
    """The H-head query, key, value and output projections (d×d, no biases) of an attention."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)
        self.w_o = nn.Linear(dim, dim, bias=False)


class TargetAttention(_Projected):
    """Multi-head softmax target attention: candidates attend to context tokens.

    O = W_O · concat_h softmax(Q_h K_hᵀ / sqrt(d_h) + bias) V_h, with Q = C W_Q,
    K = T W_K, V = T W_V (no biases, so zero tokens give zero values).
    """

    def forward(
        self,
        queries: Tensor,
        tokens: Tensor,
        mask: Tensor | None = None,
        log_weights: Tensor | None = None,
    ) -> Tensor:
        """queries (B, M, d), tokens (B, T, d), mask/log_weights (B, T) → (B, M, d)."""
        return self.attend(self.w_q(queries), tokens, mask, log_weights)

    def attend(
        self,
        projected_queries: Tensor,
        tokens: Tensor,
        mask: Tensor | None = None,
        log_weights: Tensor | None = None,
    ) -> Tensor:
        """Like :meth:`forward` with queries already multiplied by W_Q: (B, M, d) → (B, M, d).

        Serving passes rows of a per-item table E W_Qᵀ here instead of projecting anew.
        """
        q = _split_heads(projected_queries, self.heads)  # (B, H, M, d_h)
        k = _split_heads(self.w_k(tokens), self.heads)  # (B, H, T, d_h)
        v = _split_heads(self.w_v(tokens), self.heads)  # (B, H, T, d_h)
        attn_mask = logit_mask(mask, log_weights, q.dtype)
        out = self.w_o(_merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)))
        if mask is not None:
            out = out * mask.any(dim=-1).to(out.dtype)[:, None, None]
        return out


class LinearTargetAttention(_Projected):
    """Decayed elu+1 linear attention with projections (a FuXi-Linear-style retention channel).

    State S_h = Σ_j w_j φ(k_j) v_jᵀ and z_h = Σ_j w_j φ(k_j): O(d²) per user, O(d²) per event.
    """

    def forward(self, queries: Tensor, tokens: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
        """queries (B, M, d), tokens (B, N, d), mask (B, N) bool, weights (B, N) → (B, M, d)."""
        w = (weights * mask.to(weights.dtype))[:, None, :, None]  # (B, 1, N, 1)
        phi_k = elu_feature(_split_heads(self.w_k(tokens), self.heads)) * w  # (B, H, N, d_h)
        v = _split_heads(self.w_v(tokens), self.heads)  # (B, H, N, d_h)
        state = phi_k.transpose(-1, -2) @ v  # (B, H, d_h, d_h)
        norm = phi_k.sum(dim=-2, keepdim=True)  # (B, H, 1, d_h)
        phi_q = elu_feature(_split_heads(self.w_q(queries), self.heads))  # (B, H, M, d_h)
        denom = (phi_q * norm).sum(dim=-1, keepdim=True).clamp_min(1e-6)  # (B, H, M, 1)
        return self.w_o(_merge_heads((phi_q @ state) / denom))


class ElasticDispatcher(nn.Module):
    """ELASTIC-style compression: k learnable interest queries aggregate the N events with
    softmax (k×N), producing k tokens that candidates then attend to."""

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(tokens, dim) / math.sqrt(dim))
        self.dispatch = TargetAttention(dim, heads)

    def forward(self, rows: Tensor, mask: Tensor, log_weights: Tensor | None) -> Tensor:
        """rows (B, N, d), mask (B, N) → (B, k, d) interest tokens."""
        q = self.queries.unsqueeze(0).expand(rows.shape[0], -1, -1)  # (B, k, d)
        return self.dispatch(q, rows, mask, log_weights)


@torch.no_grad()
def _principal_basis(weighted_rows: Tensor, s: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Top-r right singular vectors and values of (B, N, d) rows via the float64 Gram matrix.

    Returns V_r (B, d, r) under the sign convention v_kᵀ s ≥ 0, and σ_r (B, r) descending.
    """
    x = weighted_rows.double()
    gram = x.transpose(1, 2) @ x  # (B, d, d)
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    sigma = evals.flip(-1)[:, :rank].clamp_min(0).sqrt()  # (B, r)
    V = evecs.flip(-1)[:, :, :rank]  # (B, d, r)
    signs = torch.where((s.double().unsqueeze(1) @ V) < 0, -1.0, 1.0)  # (B, 1, r)
    return (V * signs).to(weighted_rows.dtype), sigma.to(weighted_rows.dtype)


def live_tokens(sigma: Tensor) -> Tensor:
    """(B, r) descending σ → (B, r) bool, True where σ_k > 1e-6·σ_1 (none when σ_1 = 0)."""
    return sigma > LIVE_TOKEN_RTOL * sigma[:, :1].clamp_min(1e-30)


# What ``interest_tokens`` returns: (B, r, d) tokens and their (B, r) bool live mask.
Interests = tuple[Tensor, Tensor]


def interest_tokens(rows: Tensor, mask: Tensor, weights: Tensor, rank: int) -> Interests:
    """Training-time SVD-Attention tokens I = U_rᵀ (W^{1/2} X) / sqrt(n_eff), U_r detached.

    Numerically equal to diag(σ_r) V_rᵀ / sqrt(n_eff) (what the serving state holds), with
    gradients flowing into the embeddings through X. Tokens with σ_k ≤ 1e-6·σ_1 (a history
    shorter than r, or of rank < r) are zero and masked out, so the output does not depend
    on r beyond the history's rank.

    Args:
        rows: (B, N, d) event rows X. mask: (B, N) bool. weights: (B, N) recency weights.
    Returns:
        (B, r, d) tokens (zero for users with no events) and their (B, r) bool mask
        (all False for users with no events).
    """
    w = weights * mask.to(weights.dtype)  # (B, N)
    weighted = rows * w.sqrt().unsqueeze(-1)  # (B, N, d) = W^{1/2} X
    s = (rows * w.unsqueeze(-1)).sum(dim=1)  # (B, d)
    V_r, sigma = _principal_basis(weighted.detach(), s.detach(), rank)
    live = live_tokens(sigma)  # (B, r)
    with torch.no_grad():
        inv = torch.where(live, 1.0 / sigma.clamp_min(1e-30), 0.0)
        U_r = (weighted.detach() @ V_r) * inv.unsqueeze(1)  # (B, N, r)
    n_eff = w.sum(dim=1).clamp_min(1e-12)  # (B,)
    tokens = (U_r.transpose(1, 2) @ weighted) / n_eff.sqrt()[:, None, None]  # (B, r, d)
    return tokens, live


def project_rows(rows: Tensor, basis: Tensor) -> Tensor:
    """Rows projected on span(V_r): X V_r V_rᵀ. rows (B, N, d), basis (B, d, r) → (B, N, d).

    Softmax attention over these rows is `svd_exact`: exact when rank(X) ≤ r.
    """
    return (rows @ basis) @ basis.transpose(1, 2)


def principal_basis(rows: Tensor, mask: Tensor, weights: Tensor, rank: int) -> Tensor:
    """(B, d, r) top-r basis of the weighted rows (no gradient), for `svd_exact` in training."""
    w = weights * mask.to(weights.dtype)
    weighted = rows * w.sqrt().unsqueeze(-1)
    s = (rows * w.unsqueeze(-1)).sum(dim=1)
    return _principal_basis(weighted.detach(), s.detach(), rank)[0]
