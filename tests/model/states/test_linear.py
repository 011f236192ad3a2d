"""The linear state: incremental S_h, z_h equal the training layer's batch sums and output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.attention import elu_feature
from model.heads import LinearHead
from model.state_pass import linear_outputs
from model.states import Decay
from model.states.linear import LinearState
from model.states.linear import elu_feature as np_elu_feature
from model.states.weights import linear_spec
from tests.model.states.support import HEADS, blocks, events, log_weights, ranker


def _head(seed: int) -> LinearHead:
    head = ranker("linear", seed).baselines["linear"]
    assert isinstance(head, LinearHead)
    return head


def _batch_sums(head: LinearHead, rows: np.ndarray, w: torch.Tensor) -> tuple[np.ndarray, ...]:
    """S (H, d_h, d_h), z (H, d_h) computed in one batch from the layer's projections."""
    X = torch.from_numpy(rows)
    k = head.attention.w_k(X).view(-1, HEADS, 64 // HEADS).transpose(0, 1)  # (H, N, d_h)
    v = head.attention.w_v(X).view(-1, HEADS, 64 // HEADS).transpose(0, 1)
    phi = elu_feature(k) * w[0][None, :, None]
    return (phi.transpose(1, 2) @ v).detach().numpy(), phi.sum(1).detach().numpy()


@pytest.mark.parametrize("half_life_s", [None, 600.0, 20.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_blocks_out_of_order_equal_the_batch_computation(
    half_life_s: float | None, seed: int
) -> None:
    head = _head(seed)
    spec = linear_spec(head.attention, HEADS)
    decay = Decay(half_life_s) if half_life_s else None
    rows, ts = events(89, seed)
    state = LinearState.empty(spec)
    for block in blocks(89, seed):
        state = LinearState.from_bytes(state.to_bytes()).append(rows[block], ts[block], spec, decay)
    w = log_weights(ts, decay).exp()  # (1, N)
    S, z = _batch_sums(head, rows, w)
    np.testing.assert_allclose(state.S, S, atol=1e-5 * max(1.0, np.abs(S).max()), rtol=1e-6)
    np.testing.assert_allclose(state.z, z, atol=1e-5, rtol=1e-6)
    # ... and the candidates' outputs equal the training layer's on the whole history.
    cand = torch.randn(1, 7, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = head.attention(
            cand, torch.from_numpy(rows)[None], torch.ones(1, 89, dtype=torch.bool), w
        )
        got = linear_outputs(head, cand, torch.from_numpy(state.summary())[None])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_decay_ages_the_state_on_the_clock() -> None:
    head = _head(0)
    spec = linear_spec(head.attention, HEADS)
    rows, ts = events(10, 1)
    decay = Decay(100.0)
    state = LinearState.from_rows(rows, ts, spec, decay)
    later = state.append(rows[:1], np.array([ts.max() + 100.0]), spec, decay)  # one half-life
    only_new = LinearState.from_rows(rows[:1], np.array([0.0]), spec, None)
    np.testing.assert_allclose(later.S, 0.5 * state.S + only_new.S, atol=1e-12)
    assert later.n_eff == pytest.approx(0.5 * state.n_eff + 1.0)


def test_feature_map_matches_torch() -> None:
    x = np.linspace(-30, 30, 101)
    # (torch's elu(x) + 1 loses digits to cancellation far below 0: compare absolutely)
    np.testing.assert_allclose(
        np_elu_feature(x), elu_feature(torch.from_numpy(x)).numpy(), rtol=1e-12, atol=1e-15
    )


def test_state_size_is_constant_and_under_16_kb() -> None:
    spec = linear_spec(_head(0).attention, HEADS)
    small = LinearState.from_rows(*events(2, 3), spec, None)
    large = LinearState.from_rows(*events(2_000, 4), spec, None)
    assert small.nbytes == large.nbytes == 39 + HEADS * 16 * 17 * 4 + 4
    assert large.nbytes <= 16 * 1024
