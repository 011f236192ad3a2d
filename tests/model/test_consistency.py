"""Train/serve consistency: factors built event by event (the service) score like training."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from model.config import RankerConfig
from model.events.interactions import Interactions
from model.events.windows import history_batch
from model.modes import ScoreRequest
from model.ranker import Ranker
from model.states import Decay, LowRankState
from model.vocabulary import Vocabulary

N_ITEMS = 200


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # intra-op threads spin-wait badly on a shared 2-core host
    yield
    torch.set_num_threads(threads)


def _model() -> Ranker:
    torch.manual_seed(0)
    ranker = Ranker(RankerConfig(n_items=N_ITEMS + 1, n_actions=4, mode="svd"))
    torch.nn.init.normal_(ranker.action_emb.weight, std=0.1)  # actions must matter too
    return ranker.eval()


def _log(items: np.ndarray, actions: np.ndarray, ts: np.ndarray) -> Interactions:
    return Interactions(
        users=("u",),
        offsets=np.array([0, items.size], dtype=np.int64),
        items=items.astype(np.int64),
        actions=actions.astype(np.int64),
        ts=ts.astype(np.float64),
        vocab=Vocabulary(tuple(str(i) for i in range(1, N_ITEMS + 1)), ("a", "b", "c")),
    )


def _incremental_interests(
    ranker: Ranker, data: Interactions, half_life_s: float | None
) -> torch.Tensor:
    """What the service does: one LowRankState.append per event, then the r interests."""
    with torch.no_grad():
        rows = ranker.embed_events(torch.from_numpy(data.items), torch.from_numpy(data.actions))
    rows64 = rows.double().numpy()
    decay = Decay(half_life_s) if half_life_s is not None else None
    state = LowRankState.empty(ranker.config.dim, ranker.config.rank)
    for j in range(data.n_events):
        state = state.append(rows64[j : j + 1], ts=data.ts[j : j + 1], decay=decay)
    return torch.from_numpy(state.interests(ranker.config.rank)).float()


CASES = {
    # 200 events over 24 items and 3 actions: rank(X) ≤ 27 < ℓ, so truncation is lossless.
    "long-low-rank": (200, 24),
    # 40 events of distinct items: full rank but fewer events than ℓ = 48.
    "short-full-rank": (40, N_ITEMS),
}


@pytest.mark.parametrize("half_life_s", [None, 3_600.0])
@pytest.mark.parametrize("case", sorted(CASES))
def test_incremental_factors_score_like_training(case: str, half_life_s: float | None) -> None:
    n_events, n_distinct = CASES[case]
    rng = np.random.default_rng(1)
    items = rng.choice(n_distinct, size=n_events, replace=n_events > n_distinct) + 1
    actions = rng.integers(1, 4, size=n_events)
    ts = 1.7e9 + np.cumsum(rng.exponential(600.0, size=n_events))
    data = _log(items, actions, ts)
    ranker = _model()
    candidates = torch.arange(1, N_ITEMS + 1)

    hist = history_batch(data, np.array([0]), np.array([n_events]), n_events, half_life_s)
    if half_life_s is not None:  # the decay really weighs events differently
        assert float(hist.weights.min()) < 0.1
        w_last = math.exp(-(ts[-1] - ts[0]) * math.log(2) / half_life_s)
        assert float(hist.weights[0, 0]) == pytest.approx(w_last, rel=1e-5)
    with torch.no_grad():
        train_scores = ranker(candidates[None, :], hist, "svd")[0]
        interests = _incremental_interests(ranker, data, half_life_s)
        (serve_scores,) = ranker.score_requests(
            "svd", [ScoreRequest(candidates=candidates, interests=interests)]
        )
    assert serve_scores.shape == train_scores.shape == (N_ITEMS,)
    assert float(train_scores.std()) > 1e-3  # scores are not trivially constant
    assert torch.allclose(serve_scores, train_scores, atol=1e-4, rtol=0.0), float(
        (serve_scores - train_scores).abs().max()
    )
