"""The `svd` hybrid (``recent_tokens`` = k): the last k raw events join the interest tokens.
Serving from the state (factors + recent-events window, built in blocks out of order) gives
the scores of the training path on the time-sorted history."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.config import RankerConfig
from model.modes import ScoreRequest, mode_spec
from model.ranker import HistoryBatch, Ranker
from model.states import LowRankState, RecentEvents
from tests.model.modes.support import state_user

K = 3
CONFIG = RankerConfig(
    n_items=40, n_actions=3, dim=16, heads=2, rank=4, oversample=4, mlp_hidden=16, recent_tokens=K
)
LENGTHS = (2, 3, 12, 30)  # shorter than k, exactly k, longer than r + k


@pytest.fixture(scope="module")
def ranker() -> Ranker:
    torch.manual_seed(0)
    model = Ranker(CONFIG)
    torch.nn.init.normal_(model.action_emb.weight, std=0.3)
    return model.eval()


def served_state(ranker: Ranker, items: np.ndarray, actions: np.ndarray, seed: int) -> LowRankState:
    """The state a service keeps, built from the events in random blocks, in random order."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(items.size)
    state = LowRankState.empty(CONFIG.dim, CONFIG.rank, oversample=4)
    window = RecentEvents.empty(K)
    ts = np.arange(items.size, dtype=np.float64)  # event j happened at t = j
    for block in np.array_split(order, max(1, items.size // 4)):
        with torch.no_grad():
            events = (torch.from_numpy(items[block]), torch.from_numpy(actions[block]))
            rows = ranker.embed_events(*events).double().numpy()
        state = state.append(rows, ts=ts[block])
        window = window.merged(items[block], actions[block], ts[block])
    return dataclasses.replace(state, recent=window)


def svd_request(ranker: Ranker, state: LowRankState, cands: torch.Tensor) -> ScoreRequest:
    """The `svd` input the service builds from that state (its builder's tokens)."""
    return mode_spec("svd").request(cands, state_user(ranker, state, CONFIG.rank))


def test_serving_from_the_state_equals_the_training_path(ranker: Ranker) -> None:
    rng = np.random.default_rng(1)
    cands = torch.arange(1, 15)
    for seed, n in enumerate(LENGTHS):
        items = rng.integers(1, CONFIG.n_items, n)
        actions = rng.integers(0, CONFIG.n_actions, n)
        history = HistoryBatch(
            torch.from_numpy(items)[None],
            torch.from_numpy(actions)[None],
            torch.ones(1, n, dtype=torch.bool),
            torch.ones(1, n),
        )
        with torch.no_grad():
            trained = ranker(cands[None], history, "svd")[0]
        with torch.inference_mode():
            request = svd_request(ranker, served_state(ranker, items, actions, seed), cands)
            served = ranker.score_requests("svd", [request])[0]
        torch.testing.assert_close(served, trained, atol=1e-5, rtol=1e-5)


def test_the_recent_events_change_the_scores(ranker: Ranker) -> None:
    """The window is not ignored: the same factors with other latest events score otherwise."""
    cands = torch.arange(1, 15)
    items, actions = np.arange(1, 21), np.zeros(20, dtype=np.int64)
    state = served_state(ranker, items, actions, 0)
    latest = RecentEvents.empty(K).merged([30, 31, 32], [1, 2, 1], [20.0, 21.0, 22.0])
    other = dataclasses.replace(state, recent=latest)
    with torch.inference_mode():
        request = svd_request(ranker, state, cands)
        a, b = ranker.score_requests("svd", [request, svd_request(ranker, other, cands)])
    assert float((a - b).abs().max()) > 1e-4, (a - b).abs().max()
