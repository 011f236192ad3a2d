"""The elastic state: incremental online softmax equals the training dispatcher's batch output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.heads import ElasticHead
from model.states import Decay, StateError
from model.states.elastic import ElasticState
from model.states.weights import elastic_spec
from tests.model.states.support import HEADS, TOKENS, blocks, events, log_weights, ranker


def _training_tokens(
    head: ElasticHead, rows: np.ndarray, ts: np.ndarray, decay: Decay | None
) -> np.ndarray:
    """The batch dispatcher output (k, d) of the training path (float64)."""
    X = torch.from_numpy(rows)[None]  # (1, N, d)
    mask = torch.ones(1, rows.shape[0], dtype=torch.bool)
    with torch.no_grad():
        return head.dispatcher(X, mask, log_weights(ts, decay))[0].numpy()


@pytest.mark.parametrize("half_life_s", [None, 600.0, 20.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_blocks_out_of_order_equal_the_training_dispatcher(
    half_life_s: float | None, seed: int
) -> None:
    model = ranker("elastic", seed)
    head = model.baselines["elastic"]
    assert isinstance(head, ElasticHead)
    spec = elastic_spec(head.dispatcher, HEADS)
    decay = Decay(half_life_s) if half_life_s else None
    rows, ts = events(97, seed)
    state = ElasticState.empty(spec)
    for block in blocks(97, seed):
        # Through the blob between blocks, as the applier does (float32 storage).
        state = ElasticState.from_bytes(state.to_bytes()).append(
            rows[block], ts[block], spec, decay
        )
    expected = _training_tokens(head, rows, ts, decay)
    np.testing.assert_allclose(state.tokens(spec), expected, atol=1e-5, rtol=0)
    batch = ElasticState.from_rows(rows, ts, spec, decay)
    np.testing.assert_allclose(batch.tokens(spec), expected, atol=1e-9, rtol=0)
    assert (state.n, state.t_ref) == (97, ts.max())
    weights = np.ones(97) if decay is None else decay.weights(ts, ts.max())
    assert state.n_eff == pytest.approx(weights.sum(), rel=1e-6)


def test_decay_changes_the_tokens() -> None:
    """The test above could not pass with decay ignored: old and recent events weigh apart."""
    model = ranker("elastic")
    spec = elastic_spec(model.baselines["elastic"].dispatcher, HEADS)
    rows, ts = events(40, 3)
    plain = ElasticState.from_rows(rows, ts, spec, None).tokens(spec)
    decayed = ElasticState.from_rows(rows, ts, spec, Decay(50.0)).tokens(spec)
    assert np.abs(plain - decayed).max() > 1e-3


def test_a_state_without_events_gives_zero_tokens_and_a_long_idle_clock_stays_finite() -> None:
    model = ranker("elastic")
    spec = elastic_spec(model.baselines["elastic"].dispatcher, HEADS)
    empty = ElasticState.empty(spec)
    assert empty.tokens(spec).shape == (TOKENS, 64) and not empty.tokens(spec).any()
    rows, ts = events(5, 4)
    decay = Decay(1.0)
    state = ElasticState.from_rows(rows, ts, spec, decay)
    later = state.append(rows[:1], np.array([ts.max() + 1e6]), spec, decay)  # 10^6 half-lives
    assert np.all(np.isfinite(later.tokens(spec)))
    expected = ElasticState.from_rows(rows[:1], np.array([0.0]), spec, decay).tokens(spec)
    np.testing.assert_allclose(later.tokens(spec), expected, atol=1e-9)  # old events weigh 0


def test_state_size_is_constant_and_under_16_kb() -> None:
    model = ranker("elastic")
    spec = elastic_spec(model.baselines["elastic"].dispatcher, HEADS)
    small = ElasticState.from_rows(*events(3, 5), spec, None, tag="v1@h3600")
    large = ElasticState.from_rows(*events(3_000, 6), spec, None, tag="v1@h3600")
    assert small.nbytes == large.nbytes == len(large.to_bytes())
    assert large.nbytes <= 16 * 1024
    # 39-byte header, the tag, k·H·(2 + d_h) float32 values, the CRC32.
    assert large.nbytes == 39 + len("v1@h3600") + TOKENS * HEADS * (2 + 64 // HEADS) * 4 + 4


def test_bad_rows_are_refused() -> None:
    model = ranker("elastic")
    spec = elastic_spec(model.baselines["elastic"].dispatcher, HEADS)
    state = ElasticState.empty(spec)
    with pytest.raises(StateError):
        state.append(np.ones((2, 63)), np.zeros(2), spec, None)
    with pytest.raises(StateError):
        state.append(np.full((1, 64), np.nan), np.zeros(1), spec, None)
    with pytest.raises(StateError):
        state.append(np.ones((2, 64)), np.zeros(3), spec, None)
