"""A hybrid model (``recent_tokens`` = k) served over HTTP: the state keeps the k latest events
beside the factors; scores equal the training path on the time-sorted history, however the
events arrived, on the embedded store and on Redis."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import SettingsFactory
from tests.service.support import event, ingest, offline_scores, running_app, small_checkpoint

pytestmark = pytest.mark.anyio

K = 3
CANDIDATES: list[Any] = [1, 5, 9, "alpha", 17, 23, 42]


@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("hybrid"), 5, recent_tokens=K)


async def test_hybrid_scores_equal_the_training_path_whatever_the_arrival_order(
    make_settings: SettingsFactory, hybrid_dir: Path, store_url: str | None
) -> None:
    history = [event("u", t % 43 + 1, float(t), ("click", None)[t % 2]) for t in range(20)]
    shuffled = history[:]
    random.Random(0).shuffle(shuffled)
    expected = offline_scores(hybrid_dir, history, CANDIDATES, "svd")
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
