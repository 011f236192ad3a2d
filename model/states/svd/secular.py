"""Eigen-decomposition of diag(σ²) + z zᵀ through the secular equation (one-event updates).

A one-row Brand update (docs/DESIGN.md §2) needs the right singular vectors of the arrow matrix
K = [[diag σ, 0], [p, ρ]], i.e. the eigenvectors of KᵀK = diag(d) + z zᵀ with d = [σ², 0]
and z = [p, ρ]. A diagonal plus a rank-one term has n = ℓ + 1 eigenvalues that interlace
the poles d_j; each is the root of f(λ) = 1 + Σ_j z_j² / (d_j - λ) in its own interval.

Each root is found by the "middle way" rational iteration of Li (1993, as in LAPACK's
dlaed4), kept as an offset t from its nearer pole so that every difference d_j - λ_i is
computed without cancellation. The eigenvectors come from the Gu–Eisenstat (1994) formula:
ẑ from Löwner's theorem, then u_i ∝ ẑ / (d - λ_i). They are orthogonal to machine precision
whatever the roots' accuracy, and they are the exact eigenvectors of diag(d) + ẑ ẑᵀ, so
‖ẑ - z‖ / ‖z‖ is the backward error of the result: it is checked, and any problem that would
need deflation (repeated poles, negligible z_j) or fails the check is handed back to LAPACK
by returning None.

The solver is O(n²) scalar work compiled with numba: ``cache=True`` keeps the machine code in
numba's cache (beside this file, or in the user's cache directory when this one is not
writable, or ``NUMBA_CACHE_DIR``: the image sets it), which loads in ~0.3 s, against ~10 s
for a first compile that ``model.states.warm_up_kernels`` lets a process pay at start
(``make install`` and the image build pay it once); ``nogil`` lets other threads run
meanwhile. At ℓ = 48 it takes ~35–42 µs, against ~260–340 µs for the same algorithm in
vectorised numpy and ~600 µs for LAPACK's SVD of the 49 × 49 arrow matrix (docs/
BENCHMARKS.md, issue 22 round 7).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["arrow_eigh", "arrow_eigh_into"]

Array = NDArray[np.float64]

# Poles closer than this (relative to σ_1), or |z_j| below this (relative to ‖z‖), would need
# deflation: LAPACK handles those (an empty or exactly low-rank state, repeated σ).
DEFLATION_TOL = 1e-10
# Stop a root when its step is no more than this relative amount: the iteration converges at
# least quadratically, so the remaining error is ~1e-12 or less (and is checked below).
STEP_TOL = 1e-6
MAX_ITER = 12
# Accept the result only when it is the exact eigen-decomposition of a matrix whose z is
# this close to the given one (relative to ‖z‖); observed values are ~1e-16.
BACKWARD_TOL = 1e-13


def arrow_eigh(sigma: Array, z: Array) -> tuple[Array, Array] | None:
    """Eigenpairs of diag(sigma²) + z zᵀ, or None when LAPACK should be used instead.

    Args:
        sigma: (n,) non-negative, strictly descending (the last entry is usually 0).
        z: (n,) float64.
    Returns:
        λ (n,) descending and W (n, n) with orthonormal columns, (diag(σ²) + z zᵀ) W = W diag(λ).
    """
    sig = np.ascontiguousarray(sigma, dtype=np.float64)
    zz = np.ascontiguousarray(z, dtype=np.float64)
    n = sig.shape[0]
    lam, W = np.empty(n), np.empty((n, n))
    if not arrow_eigh_into(sig, zz, lam, W):
        return None
    return lam, W


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _model_root(c: float, near: float, far: float, gap: float) -> float:
    """The root t ∈ (0, gap) of c - near/t + far/(gap - t) = 0 (near, far ≥ 0), stably."""
    a = c * gap + near + far
    return 2.0 * near * gap / (a + math.sqrt(max(a * a - 4.0 * c * near * gap, 0.0)))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def arrow_eigh_into(sig: Array, z: Array, lam: Array, W: Array) -> bool:  # noqa: C901 (one kernel)
    """:func:`arrow_eigh` into λ (n,) and W (n, n), for compiled callers; False (outputs
    undefined) where LAPACK should answer."""
    n = sig.shape[0]
    z2 = z * z
    znorm2 = z2.sum()
    for j in range(n - 1):
        if not sig[j] - sig[j + 1] > DEFLATION_TOL * sig[0]:
            return False
    for j in range(n):
        if not z2[j] > DEFLATION_TOL**2 * znorm2:
            return False
    # Root i lies in (d_i, d_{i-1}) of width gap_i; the largest in (d_0, d_0 + ‖z‖²).
    gap = np.empty(n)
    gap[0] = znorm2
    for i in range(1, n):
        gap[i] = (sig[i - 1] - sig[i]) * (sig[i - 1] + sig[i])
    dl = np.empty((n, n))  # d_j - d_i, accurately
    for i in range(n):
        for j in range(n):
            dl[i, j] = (sig[j] - sig[i]) * (sig[j] + sig[i])
    offset = np.empty(n)  # λ_i = d_origin(i) + sgn_i · t_i
    sgn = np.empty(n)
    origin = np.empty(n, np.int64)
    for i in range(n):
        half = 0.5 * gap[i]
        f_mid = 1.0
        for j in range(n):
            f_mid += z2[j] / (dl[i, j] - half)
        # f increases on each interval: f(mid) ≤ 0 puts the root in the upper half, whose
        # pole d_{i-1} becomes its origin; t = |λ_i - d_origin| ∈ (0, gap_i / 2].
        upper = i > 0 and f_mid <= 0.0
        o = i - 1 if upper else i
        s = -1.0 if upper else 1.0
        origin[i], sgn[i] = o, s
        # Initial guess: the interval's two poles exact, every other term frozen at the
        # origin pole (close to the root for most of them: one event moves σ² little).
        z2_up = z2[i - 1] if i > 0 else 0.0
        near_w = z2_up if upper else z2[i]
        far_w = z2[i] + z2_up - near_w
        frozen = 1.0
        for j in range(n):
            if dl[o, j] != 0.0:
                frozen += z2[j] / dl[o, j]
        t_hi = znorm2 if i == 0 else half
        t = _model_root(s * frozen - far_w / gap[i], near_w, far_w, gap[i])
        if not (t > 0.0 and t < t_hi):
            t = half
        # Middle-way iteration, bracketed in (t_lo, t_hi).
        t_lo = 0.0
        converged = False
        for _ in range(MAX_ITER):
            f = 1.0
            d_near = 0.0
            d_all = 0.0
            for j in range(n):
                inv = 1.0 / (dl[o, j] - s * t)
                f += z2[j] * inv
                slope = z2[j] * inv * inv
                d_all += slope
                if (j < i) if upper else (j >= i):  # the poles on the origin's side
                    d_near += slope
            f *= s  # increasing in t
            d_far = d_all - d_near
            if f < 0.0:
                t_lo = t
            elif f > 0.0:
                t_hi = t
            # Each side's poles modelled by one pole matching value and slope (BNS / Li).
            far = gap[i] - t
            t_new = _model_root(
                f + d_near * t - d_far * far, d_near * t * t, d_far * far * far, gap[i]
            )
            if (t_new < t_lo or t_new > t_hi) and abs(t_new - t) > 1e-12 * t:
                # Safeguard: bisect, geometrically as brackets can span decades.
                t_new = math.sqrt(t_lo * t_hi) if t_lo > 0.0 else 0.5 * t_hi
            converged = abs(t_new - t) <= STEP_TOL * t_new
            t = t_new
            if converged:
                break
        if not converged:
            return False
        offset[i] = t
    # Gu–Eisenstat: ẑ_j² = Π_i (λ_i - d_j) / Π_{i≠j} (d_i - d_j), one ratio per factor; then
    # W[j, i] = ẑ_j / (d_j - λ_i), normalised, with d_j - λ_i taken without cancellation.
    for j in range(n):
        product = 1.0
        for i in range(n):
            diff = dl[origin[i], j] - sgn[i] * offset[i]
            product *= diff / (-1.0 if i == j else dl[i, j])
        z_hat = math.sqrt(product)
        if not abs(z_hat - abs(z[j])) <= BACKWARD_TOL * math.sqrt(znorm2):
            return False
        signed = math.copysign(z_hat, z[j])
        for i in range(n):
            W[j, i] = signed / (dl[origin[i], j] - sgn[i] * offset[i])
    for i in range(n):
        norm2 = 0.0
        for j in range(n):
            norm2 += W[j, i] * W[j, i]
        norm = math.sqrt(norm2)
        for j in range(n):
            W[j, i] /= norm
        lam[i] = sig[origin[i]] ** 2 + sgn[i] * offset[i]
    return True
