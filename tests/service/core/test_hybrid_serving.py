"""A hybrid model (``recent_tokens`` = k) served over HTTP: the state keeps the k latest events
beside the factors; scores equal the training path on the time-sorted history, however the
events arrived, on the embedded store and on Redis."""

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

K = 3
CANDIDATES: list[Any] = [1, 5, 9, "alpha", 17, 23, 42]


@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    config = RankerConfig(
        n_items=len(ITEMS) + 1,
        n_actions=len(ACTIONS) + 1,
        dim=DIM,
        heads=2,
        rank=RANK,
        oversample=OVERSAMPLE,
        mlp_hidden=16,
        recent_tokens=K,
    )
    ranker = Ranker(config)
    with torch.no_grad():
        ranker.action_emb.weight.normal_(0.0, 0.3)
    directory = tmp_path_factory.mktemp("hybrid")
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
        return [float(x) for x in ckpt.ranker(cands, batch, "svd")[0]]


async def test_hybrid_scores_equal_the_training_path_whatever_the_arrival_order(
    make_settings: SettingsFactory, hybrid_dir: Path, store_url: str | None
) -> None:
    history = [event("u", t % 43 + 1, float(t), ("click", None)[t % 2]) for t in range(20)]
    shuffled = history[:]
    random.Random(0).shuffle(shuffled)
    expected = offline_scores(hybrid_dir, history)
    arrivals = {"whole": [history], "blocks": [shuffled[i : i + 3] for i in range(0, 20, 3)]}
    settings = make_settings(model_path=hybrid_dir, redis_url=store_url)
    async with running_app(settings) as (_, client):
        for user, blocks in arrivals.items():
            for block in blocks:
                await ingest(client, [{**e, "user_id": user} for e in block])
            body = {"user_id": user, "candidates": CANDIDATES}
            response = await client.post("/rank", json=body)
            assert response.status_code == 200, response.text
            got = {i["item_id"]: i["score"] for i in response.json()["items"]}
            for c, want in zip(CANDIDATES, expected, strict=True):
                assert got[c] == pytest.approx(want, abs=1e-4), (user, c)
            await client.delete(f"/users/{user}")
