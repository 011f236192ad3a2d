"""Serving the state modes: scores from the states equal the training path's, padded batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import RankerConfig
from model.modes import ScoreRequest
from model.ranker import HistoryBatch, Ranker, RankerInputError
from model.states import Decay, make_builder


def _ranker(mode: str) -> Ranker:
    torch.manual_seed(3)
    ranker = Ranker(
        RankerConfig(
            n_items=60, n_actions=3, dim=32, heads=4, mode=mode, elastic_tokens=8, mlp_hidden=32
        )
    )
    with torch.no_grad():
        ranker.action_emb.weight.normal_(0.0, 0.1)
    return ranker.eval()


def _request(
    ranker: Ranker,
    mode: str,
    items: torch.Tensor,
    actions: torch.Tensor,
    ts: np.ndarray,
    cands: torch.Tensor,
    decay: Decay,
) -> ScoreRequest:
    builder = make_builder(ranker, rank=8, oversample=4, decay=decay, tag="t")
    state = builder.from_events(items.numpy(), actions.numpy(), ts)  # none: the empty state
    features = torch.from_numpy(builder.features(state)).float()
    if mode == "elastic":
        return ScoreRequest(cands, interests=features)
    return ScoreRequest(cands, summary=features)


@pytest.mark.parametrize("mode", ["elastic", "linear", "mean"])
def test_state_scores_equal_the_training_forward(mode: str) -> None:
    ranker = _ranker(mode)
    decay = Decay(120.0)
    rng = np.random.default_rng(0)
    sizes, cand_sizes = [30, 5, 0], [17, 9, 4]  # a user with no history too
    requests, expected = [], []
    for n, m in zip(sizes, cand_sizes, strict=True):
        items = torch.from_numpy(rng.integers(1, 60, n))
        actions = torch.from_numpy(rng.integers(0, 3, n))
        ts = rng.uniform(0, 1_000, n)
        cands = torch.from_numpy(rng.integers(0, 60, m))
        requests.append(_request(ranker, mode, items, actions, ts, cands, decay))
        w = torch.from_numpy(decay.weights(ts, ts.max()) if n else np.ones(0)).float()
        hist = HistoryBatch(items[None], actions[None], torch.ones(1, n, dtype=torch.bool), w[None])
        with torch.no_grad():
            expected.append(ranker(cands[None], hist, mode)[0])
    got = ranker.score_requests(mode, requests)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0)


def test_a_state_mode_of_another_model_is_refused() -> None:
    ranker = _ranker("linear")
    with pytest.raises(RankerInputError, match="linear"):
        ranker.score_requests(
            "elastic", [ScoreRequest(torch.arange(3), interests=torch.zeros(8, 32))]
        )
    with pytest.raises(RankerInputError, match="summary"):
        ranker.score_requests("linear", [ScoreRequest(torch.arange(3))])
