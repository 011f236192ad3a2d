"""A `lifelong` model (two channels: the factors' interest tokens and the L latest events)
served over HTTP: the applier keeps the window beside the factors, incrementally; scores
equal the training path on the time-sorted history within 1e-4, for one-shot ingestion and
for shuffled blocks, on the embedded store and on Redis."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import RankerConfig
from model.ranker import HistoryBatch, Ranker
from model.vocabulary import Vocabulary
from tests.service.conftest import SettingsFactory
from tests.service.support import ACTIONS, DIM, ITEMS, OVERSAMPLE, RANK, event, ingest, running_app

pytestmark = pytest.mark.anyio

L = 4
CANDIDATES: list[Any] = [1, 5, 9, "alpha", 17, 23, 42]


@pytest.fixture(scope="module")
def lifelong_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(7)
    config = RankerConfig(
        n_items=len(ITEMS) + 1,
        n_actions=len(ACTIONS) + 1,
        dim=DIM,
        heads=2,
        rank=RANK,
        oversample=OVERSAMPLE,
        mlp_hidden=16,
        mode="lifelong",
        recent_tokens=L,
    )
    ranker = Ranker(config)
    with torch.no_grad():
        ranker.action_emb.weight.normal_(0.0, 0.3)
    directory = tmp_path_factory.mktemp("lifelong")
    save_checkpoint(directory, ranker, Vocabulary(ITEMS, ACTIONS))
    return directory


def offline_scores(directory: Path, history: list[dict[str, Any]]) -> list[float]:
    ckpt = load_checkpoint(directory)
    ordered = sorted(history, key=lambda e: e["ts"])
    items = torch.tensor([[ckpt.vocab.item_row(e["item_id"]) for e in ordered]])
    actions = torch.tensor([[ckpt.vocab.action_row(e.get("action")) for e in ordered]])
    batch = HistoryBatch(
        items, actions, torch.ones_like(items, dtype=torch.bool), torch.ones(items.shape)
    )
    cands = torch.tensor([[ckpt.vocab.item_row(c) for c in CANDIDATES]])
    with torch.no_grad():
        return [float(x) for x in ckpt.ranker(cands, batch, "lifelong")[0]]


async def test_lifelong_scores_equal_the_training_path_whatever_the_arrival_order(
    make_settings: SettingsFactory, lifelong_dir: Path, store_url: str | None
) -> None:
    history = [event("u", t % 43 + 1, float(t), ("click", None)[t % 2]) for t in range(20)]
    shuffled = history[:]
    random.Random(1).shuffle(shuffled)
    expected = offline_scores(lifelong_dir, history)
    arrivals = {"whole": [history], "blocks": [shuffled[i : i + 3] for i in range(0, 20, 3)]}
    settings = make_settings(model_path=lifelong_dir, redis_url=store_url)
    async with running_app(settings) as (_, client):
        model = (await client.get("/model")).json()
        assert model["modes"] == ["lifelong"]
        for user, blocks in arrivals.items():
            for block in blocks:
                await ingest(client, [{**e, "user_id": user} for e in block])
            body = {"user_id": user, "candidates": CANDIDATES, "mode": "lifelong"}
            response = await client.post("/rank", json=body)
            assert response.status_code == 200, response.text
            got = {i["item_id"]: i["score"] for i in response.json()["items"]}
            for c, want in zip(CANDIDATES, expected, strict=True):
                assert got[c] == pytest.approx(want, abs=1e-4), (user, c)
            await client.delete(f"/users/{user}")
        # a mode the model does not serve is a clear 422, not a 500
        body = {"user_id": "u", "candidates": CANDIDATES, "mode": "svd"}
        assert (await client.post("/rank", json=body)).status_code == 422
