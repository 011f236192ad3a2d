"""BatchScorer on the state modes: batched top-k equal the ranker's own scores; warm-up."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from model.config import RankerConfig
from model.modes import ScoreRequest
from model.ranker import Ranker
from service.scoring.scorer import BatchScorer, RankJob


def _ranker(mode: str) -> Ranker:
    torch.manual_seed(1)
    config = RankerConfig(
        n_items=30, dim=16, heads=2, rank=4, mode=mode, elastic_tokens=5, mlp_hidden=16
    )
    return Ranker(config).eval()


def _request(mode: str, m: int, seed: int) -> ScoreRequest:
    gen = torch.Generator().manual_seed(seed)
    cands = torch.randint(0, 30, (m,), generator=gen)
    if mode == "elastic":
        return ScoreRequest(cands, interests=torch.randn(5, 16, generator=gen))
    if mode == "linear":
        return ScoreRequest(cands, summary=torch.rand(2, 8, 9, generator=gen))
    return ScoreRequest(cands, summary=torch.randn(16, generator=gen))


@pytest.mark.parametrize("mode", ["elastic", "linear", "mean"])
def test_batched_top_k_equal_the_rankers_scores(mode: str) -> None:
    ranker = _ranker(mode)
    requests = [_request(mode, m, seed) for seed, m in enumerate([12, 3, 7])]  # padded to 12
    ranked = BatchScorer(ranker, history_batch_elements=10**6)(
        [RankJob(mode, req, 4) for req in requests]
    )
    with torch.inference_mode():
        expected = ranker.score_requests(mode, requests)
    for got, scores in zip(ranked, expected, strict=True):
        k = min(4, scores.shape[0])
        order = torch.argsort(scores, descending=True)[:k]
        np.testing.assert_allclose(got.scores, scores[order].numpy(), atol=1e-5)
        np.testing.assert_allclose(scores[got.positions].numpy(), got.scores, atol=1e-5)


@pytest.mark.parametrize("mode", ["elastic", "linear", "mean"])
def test_warm_up_scores_the_served_modes(mode: str) -> None:
    scorer = BatchScorer(_ranker(mode), history_batch_elements=10**6)
    seen: list[str] = []
    real_svd, real_state = scorer.serving.svd, scorer.serving.state

    def svd(*args: Any) -> torch.Tensor:
        seen.append("tokens")
        return real_svd(*args)

    def state(*args: Any) -> torch.Tensor:
        seen.append("summary")
        return real_state(*args)

    scorer.serving.svd, scorer.serving.state = svd, state  # type: ignore[method-assign]
    scorer.warm_up(4, (mode,))
    assert seen == ["tokens" if mode == "elastic" else "summary"]
