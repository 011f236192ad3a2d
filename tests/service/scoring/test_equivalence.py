"""The optimised /rank pass (staging, fused pass, top-k on the device) returns the top k and the
scores of the plain reference, ``Ranker.forward``, on random inputs, for every served mode.

Inputs are built as the service builds them (interests and basis from
``LowRankState.from_rows``, the event log's rows and recency weights); the reference is the
training path on the same histories (its own batch SVD). Runs on the ``device`` fixture
(``SOLAR_TEST_DEVICE``; ``bench/gpu.sh`` runs it on CUDA too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from model.config import RankerConfig
from model.modes import SERVING_MODES, ScoreRequest
from model.ranker import HistoryBatch, Ranker
from model.states import LowRankState
from service.scoring.scorer import BatchScorer, Ranked, RankJob

R = 32
CONFIG = RankerConfig(n_items=400, n_actions=4, dim=64, heads=4, rank=R, mlp_hidden=128)
# (history length N, distinct items in it, candidates M, top k): no history, fewer events than
# r, long histories, and one focused on five items (strong interests).
USERS = [
    (0, 1, 50, 10),
    (5, 400, 1, 1),
    (40, 400, 300, 300),
    (150, 400, 120, 17),
    (90, 5, 777, 100),
]
TOLERANCE = 1e-5


@dataclass(frozen=True)
class User:
    items: torch.Tensor  # (N,) long
    actions: torch.Tensor  # (N,) long
    weights: torch.Tensor  # (N,) recency weights in (0, 1]
    candidates: torch.Tensor  # (M,) long, row 0 (OOV) included
    top_k: int


@pytest.fixture(scope="module")
def ranker(device: torch.device) -> Ranker:
    torch.manual_seed(0)
    model = Ranker(CONFIG)
    with torch.no_grad():  # weights large enough that histories move scores (≥ 100× the tolerance)
        model.item_emb.weight.normal_(0.0, 0.5)
        model.action_emb.weight.normal_(0.0, 0.2)
        for layer in (model.attn.w_v, model.attn.w_o):
            layer.weight.mul_(3.0)
    return model.eval().to(device)


@pytest.fixture(scope="module")
def users() -> list[User]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for n, distinct, m, k in USERS:
        ages = torch.rand(n, generator=gen).sort(descending=True).values
        out.append(
            User(
                items=torch.randint(1, min(distinct + 1, CONFIG.n_items), (n,), generator=gen),
                actions=torch.randint(0, CONFIG.n_actions, (n,), generator=gen),
                weights=torch.exp(-3.0 * ages),
                candidates=torch.randint(0, CONFIG.n_items, (m,), generator=gen),
                top_k=k,
            )
        )
    return out


def _request(ranker: Ranker, user: User) -> ScoreRequest:
    """What ``service.core.ranking`` sends: factors of the state, the log for history modes."""
    device = ranker.item_emb.weight.device
    rows = ranker.embed_events(user.items.to(device), user.actions.to(device))
    rows = rows.detach().cpu().double().numpy()
    if user.items.numel():
        state = LowRankState.from_rows(rows, R, user.weights.double().numpy())
        # the live tokens only (σ_k > 1e-6·σ_1), as the service sends them
        interests, basis = state.interests(R)[: state.live_rank()], state.V[:, :R]
    else:
        interests, basis = np.zeros((R, CONFIG.dim)), np.zeros((CONFIG.dim, R))
    return ScoreRequest(
        candidates=user.candidates,
        interests=torch.from_numpy(interests.astype(np.float32)),
        history_items=user.items,
        history_actions=user.actions,
        weights=user.weights,
        basis=torch.from_numpy(np.ascontiguousarray(basis, dtype=np.float32)),
    )


def _reference(ranker: Ranker, user: User, mode: str) -> np.ndarray:
    """Ranker.forward for one user (an empty history is one masked-out event)."""
    n = max(1, user.items.numel())
    pad = n - user.items.numel()

    def padded(x: torch.Tensor, fill: float) -> torch.Tensor:
        return torch.cat((x, torch.full((pad,), fill, dtype=x.dtype)))[None].to(
            ranker.item_emb.weight.device
        )

    history = HistoryBatch(
        items=padded(user.items, 0),
        actions=padded(user.actions, 0),
        mask=padded(torch.ones(user.items.numel(), dtype=torch.bool), False),
        weights=padded(user.weights, 1.0),
    )
    with torch.no_grad():
        logits = ranker(user.candidates[None].to(history.items.device), history, mode)[0]
    return logits.double().cpu().numpy()


def _assert_same_top_k(ranked: Ranked, reference: np.ndarray, k: int) -> None:
    assert ranked.positions.shape == ranked.scores.shape == (k,)
    assert ranked.positions.dtype == np.int64 and ranked.scores.dtype == np.float32
    np.testing.assert_allclose(ranked.scores, reference[ranked.positions], atol=TOLERANCE, rtol=0)
    assert np.all(np.diff(ranked.scores) <= 0)  # best first
    assert len(set(ranked.positions.tolist())) == k
    kth = np.sort(reference)[::-1][k - 1]
    # The same k candidates, up to candidates tied with the k-th (|Δ| ≤ tolerance).
    assert np.all(reference[ranked.positions] >= kth - TOLERANCE)
    assert np.sum(reference > kth + TOLERANCE) <= k


@pytest.mark.parametrize("mode", SERVING_MODES)
def test_optimised_path_returns_the_reference_top_k(
    ranker: Ranker, users: list[User], mode: str
) -> None:
    scorer = BatchScorer(ranker, history_batch_elements=10**9)
    jobs = [RankJob(mode, _request(ranker, u), u.top_k) for u in users]
    batched = scorer(jobs)  # all users in one padded pass
    alone = [scorer([job])[0] for job in jobs]  # and one by one
    for user, together, single in zip(users, batched, alone, strict=True):
        reference = _reference(ranker, user, mode)
        k = min(user.top_k, user.candidates.numel())
        _assert_same_top_k(together, reference, k)
        _assert_same_top_k(single, reference, k)
    spread = _reference(ranker, users[3], mode)
    assert spread.std() > 1e-3  # scores are not trivially equal


def test_mixed_modes_in_one_batch_match_separate_passes(ranker: Ranker, users: list[User]) -> None:
    scorer = BatchScorer(ranker, history_batch_elements=10**9)
    jobs = [RankJob(mode, _request(ranker, u), u.top_k) for u in users for mode in SERVING_MODES]
    mixed = scorer(jobs)
    for job, ranked in zip(jobs, mixed, strict=True):
        (alone,) = scorer([job])
        np.testing.assert_allclose(ranked.scores, alone.scores, atol=TOLERANCE, rtol=0)
        rows = job.request.candidates.numpy()  # duplicates tie: compare the items, not positions
        assert sorted(rows[ranked.positions]) == sorted(rows[alone.positions])


def test_history_moves_the_scores(ranker: Ranker, users: list[User]) -> None:
    """Not vacuous: with another user's history the same candidates score differently."""
    a, b = users[4], users[3]
    other = User(a.items, a.actions, a.weights, b.candidates, b.top_k)
    scorer = BatchScorer(ranker, history_batch_elements=10**9)
    for mode in SERVING_MODES:
        mine, theirs = scorer(
            [RankJob(mode, _request(ranker, b), 120), RankJob(mode, _request(ranker, other), 120)]
        )
        order = np.argsort(mine.positions)
        moved = np.abs(mine.scores[order] - theirs.scores[np.argsort(theirs.positions)]).max()
        assert moved > 100 * TOLERANCE, (mode, moved)
