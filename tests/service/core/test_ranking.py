"""Ranking: scores equal the ranker's own computation, modes agree where theory says so,
batches mix modes, and a state of another model is rebuilt on first access."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.modes import MODES, ScoreRequest, mode_spec
from service.core.ranking import Ranking
from service.core.users import UserStates
from tests.model.modes.support import StrongestInterest, state_user
from tests.service.conftest import SettingsFactory
from tests.service.support import RANK, event, ingest, reference_state, running_app

pytestmark = pytest.mark.anyio

CANDIDATES: list[Any] = [1, 5, 9, "alpha", 17, 23, 42, "beta", 3]


def _scores(body: dict[str, Any]) -> dict[Any, float]:
    return {item["item_id"]: item["score"] for item in body["items"]}


async def _rank(client: httpx.AsyncClient, mode: str, **kw: Any) -> dict[str, Any]:
    payload = {"user_id": "u", "candidates": CANDIDATES, "mode": mode, **kw}
    response = await client.post("/rank", json=payload)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_svd_scores_equal_the_ranker_on_batch_factors(
    client: httpx.AsyncClient, checkpoint_dir: Path
) -> None:
    history = [event("u", i % 43 + 1, float(i), ("click", None)[i % 2]) for i in range(30)]
    await ingest(client, history)
    got = _scores(await _rank(client, "svd"))
    ckpt = load_checkpoint(checkpoint_dir)
    interests = reference_state(str(checkpoint_dir), history).interests(RANK)
    rows = torch.tensor([ckpt.vocab.item_row(c) for c in CANDIDATES])
    with torch.inference_mode():
        (logits,) = ckpt.ranker.score_requests(
            "svd", [ScoreRequest(rows, interests=torch.from_numpy(interests).float())]
        )
    for c, expected in zip(CANDIDATES, logits.tolist(), strict=True):
        assert got[c] == pytest.approx(expected, abs=1e-4)


async def test_softmax_scores_equal_the_ranker_on_the_log(
    client: httpx.AsyncClient, checkpoint_dir: Path
) -> None:
    history = [event("u", i % 43 + 1, float(i), ("like", None)[i % 2]) for i in range(25)]
    await ingest(client, history)
    got = _scores(await _rank(client, "softmax"))
    ckpt = load_checkpoint(checkpoint_dir)
    request = ScoreRequest(
        candidates=torch.tensor([ckpt.vocab.item_row(c) for c in CANDIDATES]),
        history_items=torch.tensor([ckpt.vocab.item_row(e["item_id"]) for e in history]),
        history_actions=torch.tensor([ckpt.vocab.action_row(e.get("action")) for e in history]),
    )
    with torch.inference_mode():
        (logits,) = ckpt.ranker.score_requests("softmax", [request])
    for c, expected in zip(CANDIDATES, logits.tolist(), strict=True):
        assert got[c] == pytest.approx(expected, abs=1e-5)


async def test_svd_exact_equals_softmax_on_low_rank_history(client: httpx.AsyncClient) -> None:
    # three distinct rows (rank 3 ≤ r = 4), repeated: svd_exact is then exact.
    history = [event("u", (1, 2, "gamma")[i % 3], float(i)) for i in range(24)]
    await ingest(client, history)
    exact = _scores(await _rank(client, "svd_exact"))
    full = _scores(await _rank(client, "softmax"))
    for c in CANDIDATES:
        assert exact[c] == pytest.approx(full[c], abs=1e-4)


async def test_top_k_larger_than_the_candidates(client: httpx.AsyncClient) -> None:
    body = await _rank(client, "svd", top_k=100)
    assert len(body["items"]) == len(CANDIDATES)


async def test_concurrent_requests_in_mixed_modes_match_sequential_ones(
    client: httpx.AsyncClient,
) -> None:
    await ingest(client, [event("u", i, float(i), "share") for i in range(1, 12)])
    modes = ["svd", "svd_exact", "softmax"] * 4
    sequential = [_scores(await _rank(client, m)) for m in modes[:3]]
    together = await asyncio.gather(*(_rank(client, m) for m in modes))
    for i, body in enumerate(together):
        for c, score in _scores(body).items():
            assert score == pytest.approx(sequential[i % 3][c], abs=1e-5)


async def test_a_new_model_builds_its_state_once_on_rank(
    make_settings: SettingsFactory,
    redis_url: str,
    other_checkpoint_dir: Path,
    shared_history: dict[str, str],
) -> None:
    """A user the new version has no state for yet is rebuilt once from the durable history
    on its first /rank (reason new_version), and the old version's state is left alone."""
    history = [event("u", i, float(i)) for i in range(1, 15)]
    old_settings = make_settings(
        redis_url=redis_url, model_path=other_checkpoint_dir, **shared_history
    )
    async with running_app(old_settings) as (_, old):
        await ingest(old, history)
        old_version = (await old.get("/model")).json()["version"]
    async with running_app(make_settings(redis_url=redis_url, **shared_history)) as (app, new):
        body = await _rank(new, "svd")
        assert body["history_length"] == len(history)
        user = (await new.get("/users/u")).json()
        assert user["model_version"] == body["model_version"] != old_version
        registry = app.state.metrics.registry
        rebuilds = {"reason": "new_version", "version": body["model_version"], "path": "rank"}
        assert registry.get_sample_value("solar_state_rebuilds_total", rebuilds) == 1
        await _rank(new, "softmax")  # already rebuilt: no second rebuild
        assert registry.get_sample_value("solar_state_rebuilds_total", rebuilds) == 1
    async with running_app(old_settings) as (_, old):
        assert (await old.get("/users/u")).json()["model_version"] == old_version


async def test_a_history_shorter_than_r_ranks_the_same_whatever_the_served_rank(
    make_settings: SettingsFactory,
) -> None:
    """Interest tokens beyond the history's rank are masked (DESIGN §2), so 3 events give
    the same scores at r = 4 and r = 16, also batched beside a longer history."""
    short = [event("u", item, float(t)) for t, item in enumerate((3, 11, "gamma"))]
    longer = [event("v", t % 40 + 1, float(t)) for t in range(30)]
    scores = []
    for rank in (4, 16):
        async with running_app(make_settings(rank=rank)) as (_, client):
            await ingest(client, short + longer)
            both = await asyncio.gather(
                _rank(client, "svd"),
                client.post("/rank", json={"user_id": "v", "candidates": CANDIDATES}),
            )
            scores.append(_scores(both[0]))
    for c in CANDIDATES:
        assert scores[0][c] == pytest.approx(scores[1][c], abs=1e-5)


async def test_a_new_registry_entry_is_ranked_without_touching_the_service(
    make_settings: SettingsFactory, checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One more entry in model.modes: the served modes, the input built from the loaded user,
    the batcher's packing and pass all follow; scores equal the ranker's own."""
    monkeypatch.setitem(MODES, "svd_top1", StrongestInterest())
    history = [event("u", i % 43 + 1, float(i), ("click", None)[i % 2]) for i in range(30)]
    settings = make_settings()
    async with running_app(settings) as (app, client):
        await ingest(client, history)
        assert "svd_top1" in (model := app.state.model).served_modes
        users = UserStates.create(
            settings, app.state.store, model, app.state.metrics, history=app.state.history
        )
        ranking = Ranking(users=users, metrics=app.state.metrics, batcher=app.state.batcher)
        outcome = await ranking.rank("u", CANDIDATES, None, "svd_top1")
    got = dict(outcome.items)
    ckpt = load_checkpoint(checkpoint_dir)
    user = state_user(ckpt.ranker, reference_state(str(checkpoint_dir), history), RANK)
    rows = torch.tensor([ckpt.vocab.item_row(c) for c in CANDIDATES])
    request = mode_spec("svd_top1").request(rows, user)
    with torch.inference_mode():
        (logits,) = ckpt.ranker.score_requests("svd_top1", [request])
        (full,) = ckpt.ranker.score_requests("svd", [mode_spec("svd").request(rows, user)])
    for c, expected in zip(CANDIDATES, logits.tolist(), strict=True):
        assert got[c] == pytest.approx(expected, abs=1e-4)
    assert float((logits - full).abs().max()) > 3e-4  # not svd: 3× the tolerance above
