"""Eigen-decomposition of diag(σ²) + z zᵀ through the secular equation (one-event updates).

A one-row Brand update (docs/DESIGN.md §2) needs the right singular vectors of the arrow matrix
K = [[diag σ, 0], [p, ρ]], i.e. the eigenvectors of KᵀK = diag(d) + z zᵀ with d = [σ², 0]
and z = [p, ρ]. A diagonal plus a rank-one term has n = ℓ + 1 eigenvalues that interlace
the poles d_j; each is the root of f(λ) = 1 + Σ_j z_j² / (d_j - λ) in its own interval.

The roots are found all at once (vectorised) by the "middle way" rational iteration of
Li (1993, as in LAPACK's dlaed4), each root kept as an offset t from its nearer pole so
that every difference d_j - λ_i is computed without cancellation. The eigenvectors come from
the Gu–Eisenstat (1994) formula: ẑ from Löwner's theorem, then u_i ∝ ẑ / (d - λ_i). They are
orthogonal to machine precision whatever the roots' accuracy, and they are the exact
eigenvectors of diag(d) + ẑ ẑᵀ, so ‖ẑ - z‖ / ‖z‖ is the backward error of the result: it is
checked, and any problem that would need deflation (repeated poles, negligible z_j) or fails
the check is handed back to LAPACK by returning None. It takes a little over half the time
of LAPACK's SVD of the 49×49 arrow matrix, which otherwise dominates the cost of one event.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.intp]

# Poles closer than this (relative to σ_1), or |z_j| below this (relative to ‖z‖), would need
# deflation: LAPACK handles those (an empty or exactly low-rank state, repeated σ).
DEFLATION_TOL = 1e-10
# Stop when no root moved by more than this relative amount: the iteration converges at
# least quadratically, so the remaining error is ~1e-12 or less (and is checked below).
STEP_TOL = 1e-6
MAX_ITER = 12
# Accept the result only when it is the exact eigen-decomposition of a matrix whose z is
# this close to the given one (relative to ‖z‖); observed values are ~1e-16.
BACKWARD_TOL = 1e-13


@lru_cache(maxsize=8)
def _side_masks(n: int) -> tuple[BoolArray, BoolArray]:
    """(n, n) masks of the poles at or below d_i (j ≥ i) and strictly above it (j < i)."""
    j = np.arange(n)
    at_or_below = j[None, :] >= j[:, None]
    above = ~at_or_below
    at_or_below.flags.writeable = above.flags.writeable = False  # shared by every call
    return at_or_below, above


def arrow_eigh(sigma: Array, z: Array) -> tuple[Array, Array] | None:
    """Eigenpairs of diag(sigma²) + z zᵀ, or None when LAPACK should be used instead.

    Args:
        sigma: (n,) non-negative, strictly descending (the last entry is usually 0).
        z: (n,) float64.
    Returns:
        λ (n,) descending and W (n, n) with orthonormal columns, (diag(σ²) + z zᵀ) W = W diag(λ).
    """
    with np.errstate(all="ignore"):  # the unused branch of the model may divide 0 by 0
        return _arrow_eigh(sigma, z)


def _arrow_eigh(sig: Array, z: Array) -> tuple[Array, Array] | None:
    n = sig.shape[0]
    z2 = z * z
    znorm2 = float(z @ z)
    gaps = sig[:-1] - sig[1:]
    if not (gaps.min() > DEFLATION_TOL * sig[0] and z2.min() > DEFLATION_TOL**2 * znorm2):
        return None
    # Root i lies in (d_i, d_{i-1}) of width gap_i; the largest in (d_0, d_0 + ‖z‖²).
    gap = np.concatenate(([znorm2], gaps * (sig[:-1] + sig[1:])))
    dl = (sig - sig[:, None]) * (sig + sig[:, None])  # (n, n) d_j - d_i, accurately
    half = 0.5 * gap
    f_mid = 1.0 + (1.0 / (dl - half[:, None])) @ z2  # f at each interval's midpoint
    # f increases on each interval: f(mid) ≤ 0 puts the root in the upper half, whose
    # pole d_{i-1} becomes its origin; t = |λ_i - d_origin| ∈ (0, gap_i / 2].
    upper = f_mid <= 0.0
    upper[0] = False
    sgn: Array = np.where(upper, -1.0, 1.0)  # λ_i = d_origin + sgn_i t_i
    origin: IntArray = np.arange(n) - upper
    delta = dl[origin]  # (n, n) d_j - d_origin(i)
    at_or_below, above = _side_masks(n)
    near_z2 = np.where(upper[:, None], above, at_or_below) * z2  # poles on the origin's side

    # Initial guess: the interval's two poles exact, every other term frozen at the origin
    # pole (close to the root for most of them: one event moves σ² little).
    z2_up = np.concatenate(([0.0], z2[:-1]))
    near_w = np.where(upper, z2_up, z2)
    far_w = z2 + z2_up - near_w
    inv_poles = np.divide(1.0, delta, out=np.zeros_like(delta), where=delta != 0.0)
    c = sgn * (1.0 + inv_poles @ z2) - far_w / gap  # (the far pole sits at ±gap)
    t_hi = half.copy()
    t_hi[0] = znorm2
    t = _model_root(c, near_w, far_w, gap)
    t = np.where((t > 0.0) & (t < t_hi), t, half)
    roots = _iterate(t, t_hi, delta, sgn, z2, near_z2, gap)
    if roots is None:
        return None
    return _eigenvectors(sig, z, znorm2, dl, delta, sgn, origin, roots)


def _iterate(
    t: Array, t_hi: Array, delta: Array, sgn: Array, z2: Array, near_z2: Array, gap: Array
) -> Array | None:
    """Middle-way iteration on all roots at once, from t inside (0, t_hi); None if stuck.

    ``t_hi`` is updated in place (the bracket of each root).
    """
    n = t.shape[0]
    t_lo = np.zeros(n)
    buf = np.empty((2 * n, n))
    inv, inv2 = buf[:n], buf[n:]  # 1 / (d_j - λ_i) and its square, (n, n) each
    for _ in range(MAX_ITER):
        np.subtract(delta, (sgn * t)[:, None], out=inv)
        np.divide(1.0, inv, out=inv)
        np.multiply(inv, inv, out=inv2)
        f_df = buf @ z2  # (2n,) f - 1 and f'
        f = sgn * (1.0 + f_df[:n])  # increasing in t
        d_near = np.einsum("ij,ij->i", inv2, near_z2)
        d_far = f_df[n:] - d_near
        np.copyto(t_lo, t, where=f < 0.0)
        np.copyto(t_hi, t, where=f > 0.0)
        # Each side's poles modelled by one pole matching value and slope (BNS / Li).
        far = gap - t
        t_new = _model_root(f + d_near * t - d_far * far, d_near * t * t, d_far * far * far, gap)
        outside = (t_new < t_lo) | (t_new > t_hi)
        if outside.any():  # safeguard: bisect, geometrically as brackets can span decades
            outside &= np.abs(t_new - t) > 1e-12 * t  # (not a root that merely converged)
            bisect = np.where(t_lo > 0.0, np.sqrt(t_lo * t_hi), 0.5 * t_hi)
            t_new = np.where(outside, bisect, t_new)
        converged = (np.abs(t_new - t) <= STEP_TOL * t_new).all()
        t = t_new
        if converged:
            return t
    return None


def _model_root(c: Array, near: Array, far: Array, gap: Array) -> Array:
    """The root t ∈ (0, gap) of c - near/t + far/(gap - t) = 0 (near, far ≥ 0), stably."""
    a = c * gap + near + far
    return 2.0 * near * gap / (a + np.sqrt(np.maximum(a * a - 4.0 * c * near * gap, 0.0)))


def _eigenvectors(
    sig: Array,
    z: Array,
    znorm2: float,
    dl: Array,
    delta: Array,
    sgn: Array,
    origin: IntArray,
    t: Array,
) -> tuple[Array, Array] | None:
    """Gu–Eisenstat eigenvectors from the roots; None if the backward error is too large."""
    n = sig.shape[0]
    diff = delta - (sgn * t)[:, None]  # (n, n) d_j - λ_i, no cancellation
    # Löwner: ẑ_j² = Π_i (λ_i - d_j) / Π_{i≠j} (d_i - d_j), one ratio per factor.
    denom = dl.copy()
    denom.flat[:: n + 1] = -1.0
    z_hat = np.sqrt(np.prod(diff / denom, axis=0))
    if not np.abs(z_hat - np.abs(z)).max() <= BACKWARD_TOL * math.sqrt(znorm2):
        return None
    W = (np.copysign(z_hat, z) / diff).T  # (n, n) W[j, i] = ẑ_j / (d_j - λ_i)
    W /= np.sqrt(np.einsum("ji,ji->i", W, W))
    return sig[origin] ** 2 + sgn * t, W
