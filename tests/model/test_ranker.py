"""Ranker: a batched serving call equals per-user calls; the training path equals serving."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from model.config import RankerConfig
from model.modes import SERVING_MODES, LoggedEvents, ScoreRequest, mode_spec
from model.ranker import HistoryBatch, Ranker, RankerInputError
from model.states import LowRankState
from tests.model.modes.support import state_user

CONFIG = RankerConfig(n_items=60, n_actions=3, dim=16, heads=2, rank=4, oversample=4, mlp_hidden=16)
# History lengths (one user with none, one shorter than r) and candidate counts.
USERS = [(0, 5), (3, 1), (25, 12), (80, 7), (12, 3)]


@dataclass(frozen=True)
class User:
    items: torch.Tensor  # (N,) long
    actions: torch.Tensor  # (N,) long
    weights: torch.Tensor  # (N,) recency weights
    candidates: torch.Tensor  # (M,) long


@pytest.fixture(scope="module")
def ranker() -> Ranker:
    torch.manual_seed(0)
    model = Ranker(CONFIG)
    torch.nn.init.normal_(model.action_emb.weight, std=0.1)  # actions must matter too
    return model.eval()


@pytest.fixture(scope="module")
def users() -> list[User]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for n, m in USERS:
        out.append(
            User(
                items=torch.randint(1, CONFIG.n_items, (n,), generator=gen),
                actions=torch.randint(0, CONFIG.n_actions, (n,), generator=gen),
                weights=torch.rand(n, generator=gen) * 0.9 + 0.1,
                candidates=torch.randint(0, CONFIG.n_items, (m,), generator=gen),
            )
        )
    return out


def request(ranker: Ranker, user: User, mode: str) -> ScoreRequest:
    """What the service sends: the mode's input built from the factors and the log."""
    r, d = CONFIG.rank, CONFIG.dim
    if user.items.numel():
        with torch.no_grad():
            rows = ranker.embed_events(user.items, user.actions).double().numpy()
        state = LowRankState.from_rows(rows, r, user.weights.double().numpy(), oversample=4)
    else:
        state = LowRankState.empty(d, r, oversample=4)
    log = LoggedEvents(user.items.numpy(), user.actions.numpy(), user.weights.numpy())
    return mode_spec(mode).request(user.candidates, state_user(ranker, state, r, log))


def pad(seqs: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    out = torch.zeros(len(seqs), max(s.numel() for s in seqs), dtype=dtype)
    for i, s in enumerate(seqs):
        out[i, : s.numel()] = s
    return out


@pytest.mark.parametrize("mode", SERVING_MODES)
def test_batched_call_equals_per_user_calls(ranker: Ranker, users: list[User], mode: str) -> None:
    requests = [request(ranker, u, mode) for u in users]
    with torch.inference_mode():
        batched = ranker.score_requests(mode, requests)
        single = [ranker.score_requests(mode, [req])[0] for req in requests]
    assert [s.shape[0] for s in batched] == [m for _, m in USERS]
    for b, s in zip(batched, single, strict=True):
        torch.testing.assert_close(b, s, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", SERVING_MODES)
def test_training_path_equals_serving_path(ranker: Ranker, users: list[User], mode: str) -> None:
    """Ranker.forward on padded histories (batch SVD in training) = score_requests (factors)."""
    history = HistoryBatch(
        items=pad([u.items for u in users], torch.long),
        actions=pad([u.actions for u in users], torch.long),
        mask=pad([torch.ones(u.items.numel(), dtype=torch.bool) for u in users], torch.bool),
        weights=pad([u.weights for u in users], torch.float32),
    )
    candidates = pad([u.candidates for u in users], torch.long)
    with torch.no_grad():
        trained = ranker(candidates, history, mode)  # (B, M_max)
        served = ranker.score_requests(mode, [request(ranker, u, mode) for u in users])
    for i, s in enumerate(served):
        torch.testing.assert_close(trained[i, : s.shape[0]], s, atol=1e-5, rtol=1e-5)


def test_a_user_without_history_gets_a_zero_attention_output(
    ranker: Ranker, users: list[User]
) -> None:
    empty = users[0]
    assert empty.items.numel() == 0
    with torch.no_grad():
        cand = ranker.embed_items(empty.candidates)[None]  # (1, M, d)
        expected = ranker.score_outputs(cand, torch.zeros_like(cand))[0]
        for mode in SERVING_MODES:
            (scores,) = ranker.score_requests(mode, [request(ranker, empty, mode)])
            torch.testing.assert_close(scores, expected)


def test_history_changes_scores(ranker: Ranker, users: list[User]) -> None:
    """The equality tests above are not vacuous: users' histories move their scores."""
    a, b = users[2], users[3]
    swapped = User(a.items, a.actions, a.weights, b.candidates)
    with torch.no_grad():
        for mode in SERVING_MODES:
            s_b, s_swapped = ranker.score_requests(
                mode, [request(ranker, b, mode), request(ranker, swapped, mode)]
            )
            assert (s_b - s_swapped).abs().max() > 1e-4


def test_serving_input_errors(ranker: Ranker, users: list[User]) -> None:
    req = request(ranker, users[2], "softmax")
    assert ranker.score_requests("svd", []) == []
    with pytest.raises(RankerInputError, match="serving mode"):
        ranker.score_requests("linear", [req])
    with pytest.raises(RankerInputError, match="interests"):
        ranker.score_requests("svd", [ScoreRequest(candidates=req.candidates)])
    with pytest.raises(RankerInputError, match="interests"):
        ranker.score_requests("svd", [ScoreRequest(req.candidates, interests=torch.zeros(4, 3))])
    with pytest.raises(RankerInputError, match="basis"):
        ranker.score_requests(
            "svd_exact", [ScoreRequest(req.candidates, history_items=req.history_items)]
        )
    with pytest.raises(RankerInputError, match="not available"):
        history = HistoryBatch(
            torch.ones(1, 2, dtype=torch.long),
            torch.zeros(1, 2, dtype=torch.long),
            torch.ones(1, 2, dtype=torch.bool),
            torch.ones(1, 2),
        )
        ranker(torch.ones(1, 3, dtype=torch.long), history, "linear")


def test_serving_tables_follow_weight_updates() -> None:
    """The per-item serving tables are rebuilt after an optimiser step changes the weights."""
    torch.manual_seed(3)
    model = Ranker(RankerConfig(n_items=40, n_actions=2, dim=16, heads=2, rank=4))
    history = HistoryBatch(
        items=torch.randint(1, 40, (1, 12)),
        actions=torch.zeros(1, 12, dtype=torch.long),
        mask=torch.ones(1, 12, dtype=torch.bool),
        weights=torch.ones(1, 12),
    )
    candidates = torch.arange(1, 21).unsqueeze(0)  # (1, 20)
    rows = model.embed_events(history.items[0], history.actions[0]).detach()

    def served() -> torch.Tensor:
        state = LowRankState.from_rows(rows.double().numpy(), 4)
        interests = torch.from_numpy(state.interests()).float()
        with torch.inference_mode():
            return model.score_requests(
                "softmax",
                [
                    ScoreRequest(
                        candidates=candidates[0],
                        history_items=history.items[0],
                        history_actions=history.actions[0],
                        weights=torch.ones(12),
                        interests=interests,
                    )
                ],
            )[0]

    before = served()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    model(candidates, history, "softmax").sum().backward()
    optimiser.step()
    after = served()
    with torch.no_grad():
        expected = model(candidates, history, "softmax")[0]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
