"""Attention kernels against naive float64 references; svd_exact = softmax when rank(X) ≤ r."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.attention import (
    AttentionShapeError,
    linear_attention,
    softmax_attention,
    svd_attention,
    svd_exact_attention,
)
from model.states import LowRankState

ATOL = 1e-4  # DESIGN §10: svd_exact within 1e-4 of softmax (float32)


def naive_softmax(q: torch.Tensor, X: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q Xᵀ / sqrt(d) + log w) X in float64, (.., M, d)."""
    q64, X64 = q.double(), X.double()
    logits = q64 @ X64.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (.., M, N)
    if w is not None:
        logits = logits + torch.log(w.double()).unsqueeze(-2)
    return torch.softmax(logits, dim=-1) @ X64


def naive_linear(q: torch.Tensor, X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_j w_j (φ(q)·φ(x_j)) x_j / Σ_j w_j (φ(q)·φ(x_j)), one query and event at a time."""
    phi = lambda v: torch.where(v > 0, v + 1.0, torch.exp(v))  # noqa: E731 (elu + 1)
    q64, X64, w64 = q.double(), X.double(), w.double()
    out = torch.zeros_like(q64)
    for m in range(q.shape[0]):
        num = torch.zeros(q.shape[1], dtype=torch.float64)
        den = torch.zeros((), dtype=torch.float64)
        for j in range(X.shape[0]):
            a = w64[j] * (phi(q64[m]) @ phi(X64[j]))
            num += a * X64[j]
            den += a
        out[m] = num / den
    return out


def low_rank(
    n: int, d: int, r: int, seed: int, batch: tuple[int, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """(.., n, d) rows of rank r (float32) and a (.., d, r) orthonormal basis of their span,
    the basis taken from the user's factors as the service does."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((*batch, n, r)) @ rng.standard_normal((*batch, r, d)) * 0.4
    flat = X.reshape(-1, n, d)
    bases = [LowRankState.from_rows(x, r).V[:, :r] for x in flat]
    V = np.stack(bases).reshape(*batch, d, r)
    return torch.tensor(X, dtype=torch.float32), torch.tensor(V, dtype=torch.float32)


def queries(m: int, d: int, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    rng = np.random.default_rng(seed + 1000)
    return torch.tensor(rng.standard_normal((*batch, m, d)) * 0.5, dtype=torch.float32)


def weights(n: int, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    rng = np.random.default_rng(seed + 2000)
    return torch.tensor(rng.uniform(0.05, 1.0, (*batch, n)), dtype=torch.float32)


# ---------------------------------------------------------------------------- softmax
@pytest.mark.parametrize("batch", [(), (3,)])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_matches_naive(batch: tuple[int, ...], weighted: bool) -> None:
    X, _ = low_rank(300, 32, 32, seed=0, batch=batch)
    q = queries(50, 32, seed=0, batch=batch)
    w = weights(300, seed=0, batch=batch) if weighted else None
    out = softmax_attention(q, X, w)
    assert out.shape == q.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), naive_softmax(q, X, w), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- svd_exact
@pytest.mark.parametrize("batch", [(), (4,)])
@pytest.mark.parametrize("weighted", [False, True])
def test_svd_exact_equals_softmax_when_rank_at_most_r(
    batch: tuple[int, ...], weighted: bool
) -> None:
    """DESIGN §10: within 1e-4 of full softmax attention when rank(X) ≤ r."""
    X, V_r = low_rank(2_000, 64, 32, seed=1, batch=batch)
    q = queries(256, 64, seed=1, batch=batch)
    w = weights(2_000, seed=1, batch=batch) if weighted else None
    exact = svd_exact_attention(q, X, V_r, w)
    assert exact.shape == q.shape
    torch.testing.assert_close(exact, softmax_attention(q, X, w), atol=ATOL, rtol=0)
    torch.testing.assert_close(exact.double(), naive_softmax(q, X, w), atol=ATOL, rtol=0)


@given(
    n=st.integers(1, 400),
    m=st.integers(1, 64),
    d=st.sampled_from([8, 16, 64]),
    r_frac=st.floats(0.1, 1.0),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=30, deadline=None)
def test_svd_exact_equals_softmax_property(
    n: int, m: int, d: int, r_frac: float, seed: int
) -> None:
    r = max(1, round(r_frac * d))
    X, V_r = low_rank(n, d, r, seed)
    q = queries(m, d, seed)
    w = weights(n, seed)
    torch.testing.assert_close(
        svd_exact_attention(q, X, V_r, w), softmax_attention(q, X, w), atol=ATOL, rtol=0
    )


def test_svd_exact_differs_from_softmax_beyond_rank_r() -> None:
    """The test above can fail: full-rank rows are not captured by a rank-r basis."""
    rng = np.random.default_rng(2)
    X = torch.tensor(rng.standard_normal((500, 16)), dtype=torch.float32)
    V_r = torch.tensor(LowRankState.from_rows(X.numpy(), 4).V[:, :4], dtype=torch.float32)
    q = queries(20, 16, seed=2) * 4
    diff = (svd_exact_attention(q, X, V_r) - softmax_attention(q, X)).abs().max()
    assert diff > 10 * ATOL


# ---------------------------------------------------------------------------- svd
@pytest.mark.parametrize("batch", [(), (3,)])
def test_svd_attention_is_softmax_over_the_interests(batch: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    tokens = torch.tensor(rng.standard_normal((*batch, 32, 64)), dtype=torch.float32)
    q = queries(100, 64, seed=3, batch=batch)
    out = svd_attention(q, tokens)
    assert out.shape == q.shape
    torch.testing.assert_close(out.double(), naive_softmax(q, tokens), atol=1e-5, rtol=0)


def test_svd_attention_on_a_users_factors() -> None:
    """Keys = values = I = diag(σ_r) V_rᵀ / sqrt(n_eff) from the state, batched over users."""
    users = [LowRankState.from_rows(low_rank(n, 64, 40, seed=n)[0].numpy(), 32) for n in (50, 500)]
    tokens = torch.stack([torch.tensor(s.interests(), dtype=torch.float32) for s in users])
    q = queries(64, 64, seed=4, batch=(2,))
    batched = svd_attention(q, tokens)
    for b in range(2):
        torch.testing.assert_close(batched[b], svd_attention(q[b], tokens[b]))
        torch.testing.assert_close(
            batched[b].double(), naive_softmax(q[b], tokens[b]), atol=1e-5, rtol=0
        )


def test_svd_attention_mask_ignores_padding() -> None:
    """Padded tokens (mask False) do not change a user's output."""
    rng = np.random.default_rng(5)
    tokens = torch.tensor(rng.standard_normal((2, 8, 16)), dtype=torch.float32)
    mask = torch.tensor([[True] * 8, [True] * 5 + [False] * 3])
    q = queries(10, 16, seed=5, batch=(2,))
    out = svd_attention(q, tokens, mask)
    torch.testing.assert_close(out[0], svd_attention(q[0], tokens[0]))
    torch.testing.assert_close(out[1], svd_attention(q[1], tokens[1, :5]))


# ---------------------------------------------------------------------------- linear
@pytest.mark.parametrize("batch", [(), (2,)])
def test_linear_attention_matches_naive(batch: tuple[int, ...]) -> None:
    rng = np.random.default_rng(6)
    X = torch.tensor(rng.standard_normal((*batch, 40, 8)), dtype=torch.float32)
    q = queries(6, 8, seed=6, batch=batch)
    w = weights(40, seed=6, batch=batch)
    out = linear_attention(q, X, w)
    assert out.shape == q.shape
    if batch:
        for b in range(batch[0]):
            torch.testing.assert_close(out[b].double(), naive_linear(q[b], X[b], w[b]))
    else:
        torch.testing.assert_close(out.double(), naive_linear(q, X, w))
        unweighted = linear_attention(q, X)
        torch.testing.assert_close(unweighted.double(), naive_linear(q, X, torch.ones(40)))


# ---------------------------------------------------------------------------- shapes
def test_shape_errors() -> None:
    q, X = torch.zeros(4, 8), torch.zeros(10, 8)
    with pytest.raises(AttentionShapeError, match="d=8.*d=6"):
        softmax_attention(q, torch.zeros(10, 6))
    with pytest.raises(AttentionShapeError, match="2-D or both 3-D"):
        softmax_attention(q, X[None])
    with pytest.raises(AttentionShapeError, match="2-D or both 3-D"):
        svd_attention(torch.zeros(8), X)
    with pytest.raises(AttentionShapeError, match="V_r"):
        svd_exact_attention(q, X, torch.zeros(6, 2))
    with pytest.raises(AttentionShapeError):
        linear_attention(q, torch.zeros(2, 3, 8))
