"""The Brand thin-SVD row update of a state's factors, and the helpers it needs (docs/DESIGN.md §2).

Pure float64 array functions on (σ (ℓ,), V (d, ℓ)); :class:`model.states.LowRankState`
composes them. U is never formed.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from model.states.svd.secular import arrow_eigh

__all__ = [
    "ORTHO_TOLERANCE",
    "block_update",
    "brand_update",
    "is_orthonormal",
    "orient",
    "reorthonormalize",
    "update_factors",
]

ORTHO_TOLERANCE = 1e-5

Array = NDArray[np.float64]


def orient(V: Array, s: Array) -> Array:
    """Flip columns of V so that v_kᵀ s ≥ 0 (removes the SVD sign ambiguity)."""
    signs = np.where(V.T @ s < 0.0, -1.0, 1.0)
    return V * signs[None, :]


def is_orthonormal(V: Array) -> bool:
    gram = V.T @ V  # (ℓ, ℓ)
    gram.flat[:: gram.shape[0] + 1] -= 1.0
    return float(np.abs(gram).max()) <= ORTHO_TOLERANCE


def brand_update(sigma: Array, V: Array, B: Array) -> tuple[Array, Array, float]:
    """One Brand row update of diag(σ)Vᵀ by the rows B (b×d), b ≤ d - ℓ (or 1).

    P = B V; H = B - P Vᵀ; Hᵀ = Q R; K = [[diag σ, 0], [P, Rᵀ]]; K = U_k diag(σ') W_kᵀ;
    V ← [V, Q] W_k; keep the first ℓ. Returns (σ', V', dropped energy Σ dropped σ'²).
    """
    ell = sigma.shape[0]
    b = B.shape[0]
    P = B @ V  # (b, ℓ)
    H = B - P @ V.T  # (b, d)
    # A second projection (DGKS) keeps H orthogonal to V in floating point.
    correction = H @ V  # (b, ℓ)
    H -= correction @ V.T
    P += correction
    if b == 1:
        fast = _rank_one_update(sigma, V, P[0], H[0])
        if fast is not None:
            return fast
    Q, R = np.linalg.qr(H.T)  # Q (d, b), R (b, b)
    K = np.zeros((ell + b, ell + b))
    K[:ell, :ell] = np.diag(sigma)
    K[ell:, :ell] = P
    K[ell:, ell:] = R.T
    _, sigma_k, Wt = np.linalg.svd(K)  # K = U_k diag(σ') W_kᵀ
    V_new = np.hstack((V, Q)) @ Wt[:ell].T  # (d, ℓ)
    return sigma_k[:ell].copy(), V_new, float(np.sum(sigma_k[ell:] ** 2))


def update_factors(sigma: Array, V: Array, B: Array) -> tuple[Array, Array, float]:
    """Absorb the (weighted) rows B (b×d) into diag(σ)Vᵀ; returns (σ', V', dropped energy).

    One row: :func:`brand_update` through the secular equation (~0.2 ms at ℓ = 48), checked
    for orthonormality, since its rotations compound over many updates. Two rows or more:
    :func:`block_update`, one SVD of the stacked (ℓ+b)×d matrix: the same factors and a V
    orthonormal by construction, and cheaper than Brand's QR plus SVD of the (ℓ+b)² arrow
    matrix at every b ≥ 2 (d = 64, ℓ = 48: 347 vs 384 µs at b = 2, 461 vs 973 µs at b = 20,
    where Brand needs two chunks of at most d - ℓ rows).
    """
    if B.shape[0] > 1:
        return block_update(sigma, V, B)
    sigma, V, dropped = brand_update(sigma, V, B)
    # (A row already in span(V) leaves Q arbitrary; with ties at σ = 0 the SVD may mix it
    # into V.)
    if not is_orthonormal(V):
        sigma, V = reorthonormalize(sigma, V)
    return sigma, V, dropped


def block_update(sigma: Array, V: Array, B: Array) -> tuple[Array, Array, float]:
    """The same update as :func:`brand_update` for a large block B (b×d, any b), in one step.

    The right factors of [diag(σ)Vᵀ; B] come from one thin SVD of that (ℓ+b)×d matrix: one
    LAPACK call instead of ⌈b / (d - ℓ)⌉ SVDs of (ℓ+b)×(ℓ+b) chunks, and the truncation to ℓ
    happens once, not after every chunk. (Not the Gram matrix's eigenvectors: squaring would
    leave σ ≈ 0 wrong by ~1e-8·σ₁.)
    """
    ell = sigma.shape[0]
    _, sv, Vt = np.linalg.svd(np.vstack((sigma[:, None] * V.T, B)), full_matrices=False)
    return sv[:ell].copy(), np.ascontiguousarray(Vt[:ell].T), float(np.sum(sv[ell:] ** 2))


def _rank_one_update(
    sigma: Array, V: Array, p: Array, h: Array
) -> tuple[Array, Array, float] | None:
    """The b = 1 case of :func:`brand_update` through the secular equation, or None.

    K = [[diag σ, 0], [p, ρ]] with ρ = ‖h‖: its right singular vectors are the eigenvectors
    of diag(σ², 0) + z zᵀ, z = [p, ρ] (:mod:`model.states.svd.secular`): ~0.55× the time of
    LAPACK's SVD.
    """
    ell = sigma.shape[0]
    rho = math.sqrt(float(h @ h))
    if rho == 0.0:
        return None
    eig = arrow_eigh(np.append(sigma, 0.0), np.append(p, rho))
    if eig is None:
        return None
    lam, W = eig
    V_new = V @ W[:ell, :ell]  # (d, ℓ)
    V_new += np.multiply.outer(h / rho, W[ell, :ell])  # + q w_ℓᵀ, q = h / ρ
    return np.sqrt(lam[:ell]), V_new, float(lam[ell])


def reorthonormalize(sigma: Array, V: Array) -> tuple[Array, Array]:
    """Restore orthonormal V while keeping the Gram matrix V diag(σ²) Vᵀ exactly."""
    U, sv, _ = np.linalg.svd(V * sigma[None, :], full_matrices=False)  # U (d, ℓ) orthonormal
    return sv, U
