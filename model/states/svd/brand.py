"""The Brand thin-SVD row update of a state's factors, and the helpers it needs (docs/DESIGN.md §2).

Pure float64 array functions on (σ (ℓ,), V (d, ℓ)); :class:`model.states.LowRankState`
composes them. U is never formed. Small blocks go row by row through a numba kernel (one
rank-one update per row, the secular equation of ``secular`` at its core), larger ones and
what the kernel declines through one LAPACK SVD.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

from model.states.svd.secular import arrow_eigh_into

__all__ = [
    "ORTHO_TOLERANCE",
    "ROW_BY_ROW_MAX",
    "block_update",
    "is_orthonormal",
    "orient",
    "rank_one_rows",
    "reorthonormalize",
    "update_factors",
    "warm_up",
]

ORTHO_TOLERANCE = 1e-5
# Blocks of up to this many rows are absorbed row by row through the secular equation; larger
# ones in one LAPACK SVD (equal cost at ~8 rows on the development box).
ROW_BY_ROW_MAX = 8

Array = NDArray[np.float64]


def orient(V: Array, s: Array) -> Array:
    """Flip columns of V so that v_kᵀ s ≥ 0 (removes the SVD sign ambiguity)."""
    signs = np.where(V.T @ s < 0.0, -1.0, 1.0)
    return V * signs[None, :]


def is_orthonormal(V: Array) -> bool:
    """max |VᵀV - I| ≤ ``ORTHO_TOLERANCE``."""
    gram = V.T @ V  # (ℓ, ℓ)
    gram.flat[:: gram.shape[0] + 1] -= 1.0
    return float(np.abs(gram).max()) <= ORTHO_TOLERANCE


def update_factors(sigma: Array, V: Array, B: Array) -> tuple[Array, Array, float]:
    """Absorb the (weighted) rows B (b×d) into diag(σ)Vᵀ; returns (σ', V', dropped energy).

    Up to ``ROW_BY_ROW_MAX`` rows: Brand's update row by row through the secular equation
    (:func:`rank_one_rows`, compiled: ~70 µs a row at d = 64, ℓ = 48); V is then checked for
    orthonormality, since rotations compound over many updates, and restored if it drifted.
    From the first row that path declines (a state of fewer than ℓ events, whose σ = 0 ties
    need deflation; a row already in span(V)), and for larger blocks: :func:`block_update`,
    one LAPACK SVD of the stacked (ℓ+b)×d matrix (~600 µs whatever b up to d; docs/
    BENCHMARKS.md, issue 22 round 7).
    """
    if B.shape[0] > ROW_BY_ROW_MAX:
        return block_update(sigma, V, B)
    sigma, V, dropped, absorbed = rank_one_rows(sigma, V, B)
    if absorbed < B.shape[0]:
        sigma, V, rest = block_update(sigma, V, B[absorbed:])
        return sigma, V, dropped + rest
    if not is_orthonormal(V):
        sigma, V = reorthonormalize(sigma, V)
    return sigma, V, dropped


def block_update(sigma: Array, V: Array, B: Array) -> tuple[Array, Array, float]:
    """Brand's update by a block B (b×d, any b) in one step: the right factors of
    [diag(σ)Vᵀ; B] from one thin SVD of that (ℓ+b)×d matrix (one LAPACK call instead of
    ⌈b / (d - ℓ)⌉ SVDs of (ℓ+b)×(ℓ+b) arrow chunks), truncated to ℓ once. V is orthonormal
    by construction. (Not the Gram matrix's eigenvectors: squaring would leave σ ≈ 0 wrong by
    ~1e-8·σ₁.)
    """
    ell = sigma.shape[0]
    _, sv, Vt = np.linalg.svd(np.vstack((sigma[:, None] * V.T, B)), full_matrices=False)
    return sv[:ell].copy(), np.ascontiguousarray(Vt[:ell].T), float(np.sum(sv[ell:] ** 2))


def warm_up() -> None:
    """Compile the row-by-row kernels now (or load them from numba's cache, ~0.1 s) rather
    than on a process's first event (a few seconds)."""
    update_factors(np.array([1.0, 0.5]), np.eye(3)[:, :2], np.array([[0.3, 0.2, 0.9]]))


def rank_one_rows(sigma: Array, V: Array, B: Array) -> tuple[Array, Array, float, int]:
    """Brand's update by the rows of B (b×d) one at a time, through the secular equation.

    Returns (σ', V', dropped energy, rows absorbed): it stops at the first row whose arrow
    problem needs deflation or is not certified (:mod:`model.states.svd.secular`), or that
    lies in span(V) (ρ = 0), for the caller to absorb through LAPACK.
    """
    sigma_out = np.ascontiguousarray(sigma, dtype=np.float64).copy()
    V_out = np.ascontiguousarray(V, dtype=np.float64).copy()
    rows = np.ascontiguousarray(B, dtype=np.float64)
    dropped = np.zeros(1)
    absorbed = _rank_one_rows(sigma_out, V_out, rows, dropped)
    return sigma_out, V_out, float(dropped[0]), int(absorbed)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _project(V: Array, x: Array, p: Array, h: Array, step: Array) -> None:
    """One Gram–Schmidt step of x (d,) against V's (d, ℓ) columns: p (ℓ,) += Vᵀ x and
    h (d,) = x - V Vᵀ x; ``step`` (ℓ,) is scratch."""
    d, ell = V.shape
    step[:] = 0.0
    for i in range(d):
        for k in range(ell):
            step[k] += V[i, k] * x[i]
    for i in range(d):
        dot = 0.0
        for k in range(ell):
            dot += V[i, k] * step[k]
        h[i] = x[i] - dot
    for k in range(ell):
        p[k] += step[k]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rank_one_rows(sigma: Array, V: Array, B: Array, dropped: Array) -> int:
    """Brand's update of σ (ℓ,) and V (d, ℓ), in place, by the rows of B (b, d) in turn;
    adds each row's dropped energy to dropped[0] (1,). Returns the rows absorbed."""
    d, ell = V.shape
    n = ell + 1
    sig = np.zeros(n)
    z = np.empty(n)
    lam = np.empty(n)
    W = np.empty((n, n))
    p = np.empty(ell)
    h = np.empty(d)
    h2 = np.empty(d)
    step = np.empty(ell)
    V_new = np.empty((d, ell))
    for r in range(B.shape[0]):
        # p = Vᵀ b, h = b - V p, then a second projection (DGKS) keeps h ⟂ V in floating point.
        p[:] = 0.0
        _project(V, B[r], p, h, step)
        _project(V, h, p, h2, step)
        rho = math.sqrt((h2 * h2).sum())
        if rho == 0.0:
            return r
        sig[:ell] = sigma
        z[:ell] = p
        z[ell] = rho
        if not arrow_eigh_into(sig, z, lam, W):
            return r
        # V ← [V, h/ρ] W, first ℓ columns: K's right singular vectors in the old basis.
        for i in range(d):
            q = h2[i] / rho
            for k in range(ell):
                V_new[i, k] = q * W[ell, k]
            for m in range(ell):
                v = V[i, m]
                for k in range(ell):
                    V_new[i, k] += v * W[m, k]
        V[:, :] = V_new
        for k in range(ell):
            sigma[k] = math.sqrt(lam[k])
        dropped[0] += lam[ell]
    return B.shape[0]


def reorthonormalize(sigma: Array, V: Array) -> tuple[Array, Array]:
    """Restore orthonormal V while keeping the Gram matrix V diag(σ²) Vᵀ exactly."""
    U, sv, _ = np.linalg.svd(V * sigma[None, :], full_matrices=False)  # U (d, ℓ) orthonormal
    return sv, U
