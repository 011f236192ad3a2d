"""LowRankState: incremental factors equal batch factors, invariances, errors.

DESIGN §10 tolerances for incremental vs batch: singular values within 1e-3 relative and a
subspace angle ≤ 1e-2 rad. Where the rows have rank ≤ ℓ no truncation happens and the
incremental factors are exact, so the property tests compare the weighted Gram matrix
V diag(σ²) Vᵀ = Xᵀ W X, which is defined whatever the multiplicity of the singular values.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.config import DEFAULT_OVERSAMPLE
from model.states import Decay, LowRankState, StateError
from model.states.svd.brand import (
    ORTHO_TOLERANCE,
    ROW_BY_ROW_MAX,
    block_update,
    rank_one_rows,
    update_factors,
)

D, R = 64, 32
SIGMA_RTOL = 1e-3  # DESIGN §10
ANGLE_TOL = 1e-2  # rad, DESIGN §10
PROPERTY = settings(max_examples=40, deadline=None)


# ---------------------------------------------------------------------------- helpers
def low_rank_rows(
    rng: np.random.Generator, n: int, d: int = D, rank: int = R, noise: float = 1e-3
) -> np.ndarray:
    """n rows of rank ≤ ``rank`` with a spread spectrum, plus isotropic noise."""
    basis = np.linalg.qr(rng.standard_normal((d, rank)))[0].T  # (rank, d) orthonormal
    scales = np.geomspace(3.0, 0.3, rank)[:, None]
    return rng.standard_normal((n, rank)) @ (scales * basis) + noise * rng.standard_normal((n, d))


def subspace_angle(A: np.ndarray, B: np.ndarray) -> float:
    """Largest principal angle between the column spaces of orthonormal A and B (d×k)."""
    sin = np.linalg.norm(B - A @ (A.T @ B), 2)
    return float(np.arcsin(min(1.0, sin)))


def gram(state: LowRankState) -> np.ndarray:
    return (state.V * state.sigma**2) @ state.V.T


def assert_matches_batch(inc: LowRankState, ref: LowRankState, r: int = R) -> None:
    """DESIGN §10: top-r singular values and subspace of incremental vs batch factors."""
    rel = np.abs(inc.sigma[:r] - ref.sigma[:r]) / ref.sigma[:r]
    assert rel.max() <= SIGMA_RTOL, rel.max()
    assert subspace_angle(inc.V[:, :r], ref.V[:, :r]) <= ANGLE_TOL
    assert inc.n == ref.n
    assert inc.n_eff == pytest.approx(ref.n_eff, rel=1e-12)
    np.testing.assert_allclose(inc.s, ref.s, rtol=1e-9, atol=1e-9 * np.abs(ref.s).max())


def assert_gram_close(state: LowRankState, rows: np.ndarray, w: np.ndarray | None = None) -> None:
    """V diag(σ²) Vᵀ equals Xᵀ W X (exact factors: rank(X) ≤ ℓ)."""
    w = np.ones(rows.shape[0]) if w is None else w
    expected = rows.T @ (rows * w[:, None])
    scale = max(float(np.abs(expected).max()), 1e-300)
    np.testing.assert_allclose(gram(state), expected, rtol=0, atol=1e-9 * scale)


def assert_invariants(state: LowRankState) -> None:
    """σ ≥ 0 descending, V orthonormal (to the re-orthonormalisation tolerance), v_kᵀ s ≥ 0."""
    assert np.all(state.sigma >= 0)
    assert np.all(np.diff(state.sigma) <= 1e-12 * max(state.sigma[0], 1.0))
    np.testing.assert_allclose(state.V.T @ state.V, np.eye(state.ell), atol=ORTHO_TOLERANCE)
    assert np.all(state.V.T @ state.s >= -1e-9 * max(np.linalg.norm(state.s), 1.0))


def split_points(n: int, seed: int) -> list[int]:
    """Random block boundaries over n rows (blocks of 1 to 40 rows)."""
    rng = np.random.default_rng(seed)
    cuts, pos = [0], 0
    while pos < n:
        pos = min(n, pos + int(rng.integers(1, 41)))
        cuts.append(pos)
    return cuts


# ---------------------------------------------------------------------------- incremental = batch
def test_10000_single_appends_match_batch() -> None:
    """DESIGN §10: 10,000 one-event updates of rank-r data plus noise vs the batch SVD."""
    rng = np.random.default_rng(0)
    X = low_rank_rows(rng, 10_000)
    state = LowRankState.empty(D, R)
    for row in X:
        state = state.append(row)
    ref = LowRankState.from_rows(X, R)
    assert_matches_batch(state, ref)
    assert_invariants(state)
    # Energy is conserved exactly: what the factors hold plus what truncation dropped.
    assert float(np.sum(state.sigma**2)) + state.residual == pytest.approx(float(np.sum(X**2)))
    np.testing.assert_allclose(state.interests(R), ref.interests(R), atol=1e-6)


@pytest.mark.parametrize("block", [16, 37])
def test_block_appends_match_batch(block: int) -> None:
    """Blocks of b rows (also wider than d - ℓ, which the update splits) vs the batch SVD."""
    rng = np.random.default_rng(block)
    X = low_rank_rows(rng, 1_600)
    state = LowRankState.from_rows(X[:100], R)
    for start in range(100, X.shape[0], block):
        state = state.append(X[start : start + block])
    assert_matches_batch(state, LowRankState.from_rows(X, R))
    assert_invariants(state)


def test_appends_with_decay_match_batch_with_weights() -> None:
    """Decayed incremental (ts + Decay) = batch with explicit weights = batch with ts + Decay."""
    rng = np.random.default_rng(1)
    X = low_rank_rows(rng, 2_000)
    ts = np.sort(rng.uniform(0.0, 5_000.0, X.shape[0]))
    decay = Decay(half_life_s=1_000.0)
    state = LowRankState.empty(D, R)
    for j in range(X.shape[0]):
        state = state.append(X[j], ts=ts[j : j + 1], decay=decay)
    weights = np.exp(-(ts[-1] - ts) / decay.tau_s)
    by_weights = LowRankState.from_rows(X, R, weights)
    by_decay = LowRankState.from_rows(X, R, ts=ts, decay=decay)
    assert_matches_batch(state, by_weights)
    assert_matches_batch(by_decay, by_weights)
    assert state.t_ref == by_decay.t_ref == ts[-1]
    assert state.n_eff == pytest.approx(weights.sum(), rel=1e-9)


def test_out_of_order_events_with_decay() -> None:
    """Events arriving late get the weight of their age from t_ref: order does not matter."""
    rng = np.random.default_rng(2)
    X = low_rank_rows(rng, 300, rank=20, noise=0.0)  # rank ≤ ℓ: exact factors
    ts = rng.uniform(0.0, 3_000.0, X.shape[0])  # unsorted
    decay = Decay(half_life_s=500.0)
    state = LowRankState.empty(D, R)
    cuts = split_points(X.shape[0], seed=3)
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        state = state.append(X[a:b], ts=ts[a:b], decay=decay)
    ref = LowRankState.from_rows(X, R, ts=ts, decay=decay)
    assert state.t_ref == ref.t_ref == ts.max()
    assert_gram_close(state, X, np.exp(-(ts.max() - ts) / decay.tau_s))
    np.testing.assert_allclose(state.interests(R), ref.interests(R), atol=1e-8)


@given(
    n=st.integers(1, 120),
    d=st.sampled_from([4, 8, 16]),
    rank_frac=st.floats(0.1, 1.0),
    oversample=st.integers(0, 6),
    data_rank=st.integers(1, 16),
    log_scale=st.floats(-3.0, 3.0),
    weighted=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
@PROPERTY
def test_incremental_equals_batch_property(
    n: int,
    d: int,
    rank_frac: float,
    oversample: int,
    data_rank: int,
    log_scale: float,
    weighted: bool,
    seed: int,
) -> None:
    """Any split into blocks, any weights: exact Gram, n, n_eff, s, residual when rank ≤ ℓ."""
    rng = np.random.default_rng(seed)
    rank = max(1, round(rank_frac * d))
    ell = min(rank + oversample, d)
    k = min(data_rank, ell)
    X = rng.standard_normal((n, k)) @ rng.standard_normal((k, d)) * 10.0**log_scale
    if n > 3:
        X[1] = X[0]  # repeated events are common
    w = rng.uniform(0.0, 2.0, n) if weighted else None
    state = LowRankState.empty(d, rank, oversample)
    cuts = split_points(n, seed)
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        state = state.append(X[a:b], None if w is None else w[a:b])
    ref = LowRankState.from_rows(X, rank, w, oversample=oversample)
    assert state.ell == ref.ell == ell
    assert_gram_close(state, X, w)
    assert_gram_close(ref, X, w)
    assert_invariants(state)
    assert state.n == n and state.n_eff == pytest.approx(ref.n_eff)
    total = float(np.sum(X**2 * (1.0 if w is None else w[:, None])))
    assert state.residual <= 1e-9 * total


def test_noisy_full_rank_keeps_energy_and_residual() -> None:
    """Full-rank data: truncation drops energy into ρ; Σσ² + ρ is still ‖X‖²_F."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((500, 16))
    state = LowRankState.empty(16, 4, oversample=4)
    for row in X:
        state = state.append(row)
    assert float(np.sum(state.sigma**2)) + state.residual == pytest.approx(float(np.sum(X**2)))
    assert 0.0 < state.residual_ratio < 1.0
    ref = LowRankState.from_rows(X, 4, oversample=4)
    assert ref.residual == pytest.approx(float(np.sum(np.linalg.svd(X)[1][8:] ** 2)))


# ---------------------------------------------------------------------------- invariances
def test_order_invariance_without_decay() -> None:
    rng = np.random.default_rng(5)
    X = low_rank_rows(rng, 160, rank=24, noise=0.0)  # rank ≤ ℓ: exact factors
    perm = rng.permutation(X.shape[0])
    forward = LowRankState.empty(D, R)
    shuffled = LowRankState.empty(D, R)
    for a, b in zip(range(X.shape[0]), perm, strict=True):
        forward = forward.append(X[a])
        shuffled = shuffled.append(X[b])
    assert_gram_close(forward, X)
    assert_gram_close(shuffled, X)
    np.testing.assert_allclose(forward.sigma, shuffled.sigma, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(forward.s, shuffled.s, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(forward.interests(R), shuffled.interests(R), atol=1e-9)


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(40, 200), d=st.sampled_from([8, 16]))
@PROPERTY
def test_interests_invariances(seed: int, n: int, d: int) -> None:
    """I is fixed by the data, not by the SVD's sign and order ambiguities.

    Row permutations leave I unchanged; flipping V's columns is undone by the sign
    convention; a rotation of the rows rotates I; uniform weights and duplicated histories
    leave I unchanged; IᵀI = Xᵀ W X / n_eff.
    """
    rng = np.random.default_rng(seed)
    r = d // 2
    X = rng.standard_normal((n, d)) * np.geomspace(2.0, 0.1, d) + 0.3  # mean ≠ 0: s ≠ 0
    w = rng.uniform(0.1, 1.0, n)
    base = LowRankState.from_rows(X, r, w, oversample=d)  # ℓ = d: exact
    tokens = base.interests(r)
    full = base.interests(d)
    np.testing.assert_allclose(full.T @ full, X.T @ (X * w[:, None]) / w.sum(), atol=1e-9)
    assert_invariants(base)

    perm = rng.permutation(n)
    np.testing.assert_allclose(
        LowRankState.from_rows(X[perm], r, w[perm], oversample=d).interests(r), tokens, atol=1e-8
    )
    flipped = replace(base, V=base.V * rng.choice([-1.0, 1.0], base.ell))
    reoriented = flipped.append(np.zeros(d), weights=[0.0])  # a no-op event re-orients
    np.testing.assert_allclose(reoriented.interests(r), tokens, atol=1e-8)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    np.testing.assert_allclose(
        LowRankState.from_rows(X @ Q.T, r, w, oversample=d).interests(r), tokens @ Q.T, atol=1e-8
    )
    np.testing.assert_allclose(
        LowRankState.from_rows(X, r, 7.5 * w, oversample=d).interests(r), tokens, atol=1e-8
    )
    doubled = LowRankState.from_rows(np.vstack((X, X)), r, np.tile(w, 2), oversample=d)
    np.testing.assert_allclose(doubled.interests(r), tokens, atol=1e-8)


def test_interests_scale_and_empty_user() -> None:
    rng = np.random.default_rng(6)
    X = low_rank_rows(rng, 300, rank=8, noise=0.0)
    state = LowRankState.from_rows(X, 8)
    tokens = state.interests()
    assert tokens.shape == (8, D)
    assert tokens.flags.c_contiguous  # torch.from_numpy keeps strides; attention wants C order
    np.testing.assert_allclose(tokens.T @ tokens, X.T @ X / X.shape[0], atol=1e-10)
    np.testing.assert_allclose(tokens, state.sigma[:8, None] * state.V[:, :8].T / math.sqrt(300))
    assert state.interests(3).shape == (3, D)
    empty = LowRankState.empty(D, R)
    assert empty.n == 0 and empty.n_eff == 0.0 and empty.ell == R + DEFAULT_OVERSAMPLE
    np.testing.assert_array_equal(empty.interests(), np.zeros((R, D)))
    assert empty.residual_ratio == 0.0


def test_uniform_decay_leaves_interests_unchanged() -> None:
    """DESIGN §2: decaying all weights alike does not move I."""
    rng = np.random.default_rng(7)
    X = low_rank_rows(rng, 200, rank=10)
    decay = Decay(half_life_s=60.0)
    state = LowRankState.from_rows(X, R, ts=np.full(200, 100.0), decay=decay)
    later = state.decayed_to(1_000.0, decay)
    assert later.t_ref == 1_000.0
    assert later.n_eff == pytest.approx(state.n_eff * math.exp(-900.0 / decay.tau_s))
    np.testing.assert_allclose(later.interests(), state.interests(), atol=1e-12)
    past = state.decayed_to(50.0, decay)  # the past never re-weights
    assert past.t_ref == 100.0 and past.n_eff == state.n_eff
    np.testing.assert_array_equal(past.sigma, state.sigma)


def test_torch_inputs_are_accepted() -> None:
    rng = np.random.default_rng(8)
    X = low_rank_rows(rng, 100, rank=5)
    a = LowRankState.from_rows(torch.from_numpy(X).float(), R, torch.ones(100))
    b = LowRankState.from_rows(X.astype(np.float32), R, np.ones(100))
    np.testing.assert_allclose(a.sigma, b.sigma)
    c = a.append(torch.from_numpy(X[:3]), weights=torch.ones(3))
    assert c.n == 103


def test_reorthonormalises_a_drifted_basis() -> None:
    """A V that drifted past the tolerance is restored, keeping V diag(σ²) Vᵀ."""
    rng = np.random.default_rng(9)
    X = rng.standard_normal((100, 16))
    state = LowRankState.from_rows(X, 4, oversample=4)
    drifted = replace(state, V=state.V + 1e-4 * rng.standard_normal(state.V.shape))
    after = drifted.append(np.zeros(16), weights=[0.0])
    np.testing.assert_allclose(after.V.T @ after.V, np.eye(8), atol=1e-12)
    np.testing.assert_allclose(gram(after), gram(drifted), atol=1e-9 * gram(drifted).max())


def test_t_ref_without_decay_keeps_the_latest_time() -> None:
    state = LowRankState.from_rows(np.ones((2, 4)), 1, ts=[0.0, 0.0])
    assert state.t_ref == 0.0
    assert state.append(np.ones(4), ts=[-5.0]).t_ref == 0.0  # not the earlier event's time
    assert state.append(np.ones(4), ts=[7.0]).t_ref == 7.0
    assert state.append(np.ones(4)).t_ref == 0.0


# ---------------------------------------------------------------------------- input errors
@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (np.array([[1.0, np.nan, 0.0, 0.0]]), "NaN or infinite"),
        (np.array([[1.0, np.inf, 0.0, 0.0]]), "NaN or infinite"),
        (np.zeros((0, 4)), "non-empty"),
        (np.zeros((3, 0)), "non-empty"),
        (np.zeros((2, 2, 4)), "2-D"),
    ],
)
def test_bad_rows_are_rejected(rows: np.ndarray, match: str) -> None:
    with pytest.raises(StateError, match=match):
        LowRankState.from_rows(rows, 2)
    with pytest.raises(StateError, match=match):
        LowRankState.from_rows(np.ones((3, 4)), 2).append(rows)


def test_rows_of_another_dimension_are_rejected() -> None:
    with pytest.raises(StateError, match="dimension 5, the state has d=4"):
        LowRankState.from_rows(np.ones((3, 4)), 2).append(np.ones((1, 5)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": [1.0, -1.0, 1.0]}, "non-negative"),
        ({"weights": [1.0, math.nan, 1.0]}, "NaN"),
        ({"weights": [1.0, 1.0]}, "2 entries for 3 rows"),
        ({"ts": [1.0, 2.0, math.inf]}, "NaN"),
        ({"decay": Decay(10.0)}, "decay needs timestamps"),
    ],
)
def test_bad_weights_and_times_are_rejected(kwargs: dict[str, object], match: str) -> None:
    X = np.ones((3, 4))
    with pytest.raises(StateError, match=match):
        LowRankState.from_rows(X, 2, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(StateError, match=match):
        LowRankState.empty(4, 2).append(X, **kwargs)  # type: ignore[arg-type]


def test_bad_ranks_are_rejected() -> None:
    X = np.ones((3, 4))
    with pytest.raises(StateError, match="exceeds"):
        LowRankState.from_rows(X, 5)
    with pytest.raises(StateError, match="rank must be"):
        LowRankState.from_rows(X, 0)
    with pytest.raises(StateError, match="oversample"):
        LowRankState.empty(4, 2, oversample=-1)
    state = LowRankState.from_rows(X, 2)
    for r in (0, state.ell + 1):
        with pytest.raises(StateError, match="r must be"):
            state.interests(r)
    for half_life in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(StateError, match="half_life_s"):
            Decay(half_life)


def test_a_block_takes_one_svd_and_matches_one_row_updates() -> None:
    """Blocks of more than ``ROW_BY_ROW_MAX`` rows go through ``block_update``; one row at a
    time through Brand's update: the same factors."""
    rng = np.random.default_rng(11)
    X = low_rank_rows(rng, 400)
    base = LowRankState.from_rows(X[:100], R)
    block = X[100:]
    one = base.append(block)
    chunked = base
    for row in block:
        chunked = chunked.append(row[None, :])
    ref = LowRankState.from_rows(X, R)
    assert one.n == chunked.n == 400
    np.testing.assert_allclose(one.sigma[:R], ref.sigma[:R], rtol=1e-6)
    np.testing.assert_allclose(gram(one), gram(chunked), atol=1e-6 * ref.sigma[0] ** 2)
    assert abs(one.V.T @ one.V - np.eye(one.ell)).max() < 1e-10
    assert np.all(one.V.T @ one.s >= 0)  # the sign convention


def test_row_by_row_updates_of_a_drifted_basis_are_restored() -> None:
    """The compiled row-by-row path (a state of more than ℓ events, a small block) on a V
    that drifted past the tolerance: V comes back orthonormal, the Gram matrix kept to the
    drift's order."""
    rng = np.random.default_rng(10)
    X = low_rank_rows(rng, 103, d=16, rank=6)  # ℓ = 8: σ_7, σ_8 at the noise, nothing tied
    state = LowRankState.from_rows(X[:100], 4, oversample=4)
    drifted = replace(state, V=state.V + 1e-4 * rng.standard_normal(state.V.shape))
    rows = X[100:]
    assert rank_one_rows(drifted.sigma, drifted.V, rows)[3] == 3  # the compiled path's rows
    after = drifted.append(rows)
    np.testing.assert_allclose(after.V.T @ after.V, np.eye(8), atol=1e-12)
    expected = gram(drifted) + rows.T @ rows
    np.testing.assert_allclose(gram(after), expected, atol=1e-3 * np.abs(expected).max())


@pytest.mark.parametrize("block", [1, 2, ROW_BY_ROW_MAX])
def test_small_blocks_row_by_row_match_one_svd(block: int) -> None:
    """A mature state (σ > 0 throughout): a block of up to ``ROW_BY_ROW_MAX`` rows goes
    through the compiled rank-one updates, and gives the factors of one LAPACK SVD of the
    stacked rows (``block_update``) to the order of what truncation drops (here only the
    noise): the same σ, the same Gram matrix, V orthonormal."""
    rng = np.random.default_rng(12)
    X = low_rank_rows(rng, 300)
    state = LowRankState.from_rows(X[:200], R)
    assert state.sigma[-1] > 0
    rows = X[200 : 200 + block]
    sigma, V, _, absorbed = rank_one_rows(state.sigma, state.V, rows)
    assert absorbed == block
    ref_sigma, ref_V, _ = block_update(state.sigma, state.V, rows)
    np.testing.assert_allclose(sigma[:R], ref_sigma[:R], rtol=1e-9)  # only noise is dropped
    np.testing.assert_allclose(
        (V * sigma**2) @ V.T, (ref_V * ref_sigma**2) @ ref_V.T, atol=1e-6 * sigma[0] ** 2
    )
    assert abs(V.T @ V - np.eye(V.shape[1])).max() < 1e-12


def test_a_young_state_takes_one_svd() -> None:
    """Fewer events than ℓ: σ has ties at 0, which the compiled path declines at once, and
    the block goes through ``block_update`` whole: the batch factors exactly."""
    rng = np.random.default_rng(13)
    X = rng.standard_normal((9, D))
    young = LowRankState.from_rows(X[:5], R)
    assert rank_one_rows(young.sigma, young.V, X[5:])[3] == 0
    after = young.append(X[5:])
    assert_gram_close(after, X)
    assert_invariants(after)


def test_a_block_the_kernel_declines_midway_is_finished_by_one_svd() -> None:
    """The kernel absorbs the first row, declines the second (it lies in the updated span:
    ρ = 0 needs deflation) and ``update_factors`` absorbs the rest with ``block_update``: every
    row counted, the Gram matrix of all rows, V orthonormal."""
    rng = np.random.default_rng(14)
    X = low_rank_rows(rng, 201)
    state = LowRankState.from_rows(X[:200], R)
    first = X[200:]
    _, V_after, _, absorbed = rank_one_rows(state.sigma, state.V, first)
    assert absorbed == 1
    rows = np.vstack((first, 3.0 * V_after[:, 0], rng.standard_normal(D) * 0.1))
    assert rank_one_rows(state.sigma, state.V, rows)[3] == 1  # declined at the second row
    sigma, V, dropped = update_factors(state.sigma, state.V, rows)
    expected = (state.V * state.sigma**2) @ state.V.T + rows.T @ rows
    got = (V * sigma**2) @ V.T
    np.testing.assert_allclose(got, expected, atol=1e-9 * np.abs(expected).max() + dropped)
    assert abs(V.T @ V - np.eye(V.shape[1])).max() < 1e-12
