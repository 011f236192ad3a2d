"""Interest tokens with σ_k ≤ 1e-6·σ_1 are masked out of the softmax (DESIGN §2): a history
shorter than r gives the same scores whatever r is, in training and in serving."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.config import RankerConfig
from model.layers import interest_tokens
from model.modes import mode_spec
from model.ranker import HistoryBatch, Ranker
from model.states import LowRankState
from tests.model.modes.support import state_user

CONFIG = RankerConfig(n_items=50, n_actions=2, dim=32, heads=2, rank=8, oversample=4, mlp_hidden=16)
N_EVENTS = 5


def ranker_with_rank(rank: int) -> Ranker:
    """The same weights (seed 0) served at another r: r has no parameters of its own."""
    torch.manual_seed(0)
    model = Ranker(dataclasses.replace(CONFIG, rank=rank))
    return model.eval()


@pytest.fixture(scope="module")
def history() -> HistoryBatch:
    gen = torch.Generator().manual_seed(3)
    items = torch.randint(1, CONFIG.n_items, (2, N_EVENTS), generator=gen)
    mask = torch.ones(2, N_EVENTS, dtype=torch.bool)
    return HistoryBatch(items, torch.ones_like(items), mask, torch.rand(2, N_EVENTS) + 0.5)


CANDIDATES = torch.arange(1, 21).repeat(2, 1)  # (2, 20)


def test_training_scores_do_not_depend_on_r_beyond_the_history(history: HistoryBatch) -> None:
    with torch.no_grad():
        small = ranker_with_rank(8)(CANDIDATES, history, "svd")
        large = ranker_with_rank(32)(CANDIDATES, history, "svd")
    torch.testing.assert_close(small, large, atol=1e-5, rtol=1e-5)


def test_the_mask_marks_exactly_the_history_rank(history: HistoryBatch) -> None:
    rows = ranker_with_rank(32).embed_events(history.items, history.actions)
    tokens, live = interest_tokens(rows, history.mask, history.weights, 32)
    assert live.sum(dim=1).tolist() == [N_EVENTS, N_EVENTS]
    assert torch.all(tokens[~live] == 0)
    empty = torch.zeros_like(history.mask)
    _, none_live = interest_tokens(rows, empty, history.weights, 32)
    assert not none_live.any()


def served_scores(rank: int, history: HistoryBatch, incremental: bool) -> torch.Tensor:
    ranker = ranker_with_rank(rank)
    with torch.no_grad():
        rows = ranker.embed_events(history.items[0], history.actions[0]).double().numpy()
    weights = history.weights[0].double().numpy()
    if incremental:  # one event at a time: Brand's update leaves tiny, not zero, σ_k
        state = LowRankState.empty(CONFIG.dim, rank, oversample=4)
        for row, w in zip(rows, weights, strict=True):
            state = state.append(row[None, :], np.array([w]))
    else:
        state = LowRankState.from_rows(rows, rank, weights, oversample=4)
    assert state.live_rank() == N_EVENTS
    user = state_user(ranker, state, rank)
    request = mode_spec("svd").request(CANDIDATES[0], user)  # the live tokens only
    with torch.inference_mode():
        return ranker.score_requests("svd", [request])[0]


@pytest.mark.parametrize("incremental", [False, True])
def test_serving_scores_do_not_depend_on_r_beyond_the_history(
    history: HistoryBatch, incremental: bool
) -> None:
    small = served_scores(8, history, incremental)
    large = served_scores(32, history, incremental)
    torch.testing.assert_close(small, large, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        trained = ranker_with_rank(32)(CANDIDATES[:1], history_row(history), "svd")[0]
    torch.testing.assert_close(large, trained, atol=1e-5, rtol=1e-5)


def history_row(history: HistoryBatch) -> HistoryBatch:
    return HistoryBatch(*(t[:1] for t in dataclasses.astuple(history)))


def test_live_rank_of_a_state_without_history_is_zero() -> None:
    assert LowRankState.empty(CONFIG.dim, 8).live_rank() == 0
