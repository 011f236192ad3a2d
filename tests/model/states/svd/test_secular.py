"""arrow_eigh: the secular-equation eigen-solver behind one-event updates, against LAPACK."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from model.states import LowRankState
from model.states.svd.secular import arrow_eigh


def check_decomposition(sig: np.ndarray, z: np.ndarray) -> None:
    """arrow_eigh's result is an accurate, orthonormal eigen-decomposition.

    Eigenvalues within 2e-12 of LAPACK's (relative to ‖A‖): the solver certifies a backward
    error ‖ẑ - z‖ ≤ 1e-13 ‖z‖ (~2e-13 ‖z‖² on eigenvalues), and the LAPACK reference carries
    its own O(n·eps·‖A‖) error; hypothesis found a case 5.3e-13·‖A‖ apart, so a bound at the
    certified value alone would flake. (The factors need 1e-3; this is 1e-12.)
    """
    result = arrow_eigh(sig, z)
    assert result is not None
    lam, W = result
    n = sig.shape[0]
    A = np.diag(sig**2) + np.outer(z, z)
    scale = float(sig[0] ** 2 + z @ z)
    reference = np.linalg.eigvalsh(A)[::-1]
    assert np.all(np.diff(lam) < 0)
    np.testing.assert_allclose(lam, reference, rtol=0, atol=2e-12 * scale)
    np.testing.assert_allclose(W.T @ W, np.eye(n), atol=1e-13)
    np.testing.assert_allclose(A @ W, W * lam, rtol=0, atol=1e-12 * scale)


@given(
    n=st.integers(2, 64),
    log_spread=st.floats(0.0, 6.0),
    z_log_spread=st.floats(0.0, 4.0),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=150, deadline=None)
def test_matches_lapack_or_declines(
    n: int, log_spread: float, z_log_spread: float, seed: int
) -> None:
    """Spectra spread over up to six decades, z over four: accurate whenever it answers."""
    rng = np.random.default_rng(seed)
    sig = np.sort(10.0 ** rng.uniform(-log_spread, 0.0, n))[::-1]
    sig[-1] = 0.0  # the new direction of a Brand update
    z = rng.standard_normal(n) * 10.0 ** rng.uniform(-z_log_spread, 0.0, n)
    if arrow_eigh(sig, z) is not None:
        check_decomposition(sig, z)


def test_clustered_spectrum_of_a_long_history() -> None:
    """A steady state: 32 signal directions and a tight cluster of noise singular values."""
    rng = np.random.default_rng(0)
    sig = np.concatenate((np.sort(rng.uniform(100.0, 300.0, 32))[::-1], np.zeros(17)))
    sig[32:48] = np.sort(rng.uniform(0.09, 0.11, 16))[::-1]
    z = np.concatenate((rng.standard_normal(32) * 3.0, rng.standard_normal(17) * 1e-3))
    check_decomposition(sig, z)


def test_real_update_takes_the_fast_path() -> None:
    """The arrow matrices of a realistic stream are solved here, not handed to LAPACK."""
    rng = np.random.default_rng(1)
    basis = rng.standard_normal((32, 64))
    X = rng.standard_normal((600, 32)) @ basis + 1e-3 * rng.standard_normal((600, 64))
    state = LowRankState.from_rows(X[:500], 32)
    for x in X[500:]:
        p = state.V.T @ x
        rho = float(np.linalg.norm(x - state.V @ p))
        check_decomposition(np.append(state.sigma, 0.0), np.append(p, rho))
        state = state.append(x)


def test_declines_problems_that_need_deflation() -> None:
    """Repeated poles, zero σ or negligible z_j: LAPACK's job (None)."""
    z = np.ones(4)
    assert arrow_eigh(np.array([3.0, 2.0, 2.0, 0.0]), z) is None
    assert arrow_eigh(np.zeros(4), z) is None
    assert arrow_eigh(np.array([3.0, 2.0, 1.0, 0.0]), np.array([1.0, 0.0, 1.0, 1.0])) is None
    assert arrow_eigh(np.array([3.0, 2.0, 1.0, 0.0]), np.zeros(4)) is None
    check_decomposition(np.array([3.0, 2.0, 1.0, 0.0]), z)
