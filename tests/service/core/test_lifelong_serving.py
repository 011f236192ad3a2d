"""A `lifelong` model (two channels: the factors' interest tokens and the L latest events)
served over HTTP: the applier keeps the window beside the factors, incrementally; scores
equal the training path on the time-sorted history within 1e-4, for one-shot ingestion and
for shuffled blocks, on the embedded store and on Redis; with the time-aware long-term channel
too (the checkpoint's ``half_life_s``: the factors decay, the window does not), with the
repeat channel (``repeat_buckets``: hashed item counts, decayed like the factors), and with
an svd read-out (``svd_readout``: the same state also serves svd, svd_exact and softmax; a
/rank without a mode is scored in `lifelong`, the model's own)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import SettingsFactory
from tests.service.support import event, ingest, offline_scores, running_app, small_checkpoint

pytestmark = pytest.mark.anyio

L = 4
CANDIDATES: list[Any] = [1, 5, 9, "alpha", 17, 23, 42]


@pytest.fixture(
    scope="module",
    params=[(None, 0, False), (5.0, 0, False), (None, 64, False), (5.0, 64, True)],
    ids=["no-decay", "half-life-5s", "repeats", "repeats-half-life-5s-svd-readout"],
)
def lifelong_dir(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[Path, bool]:
    half_life_s, repeat_buckets, svd_readout = request.param
    directory = small_checkpoint(
        tmp_path_factory.mktemp("lifelong"),
        7,
        mode="lifelong",
        recent_tokens=L,
        half_life_s=half_life_s,
        repeat_buckets=repeat_buckets,
        svd_readout=svd_readout,
        weight_gain=3.0,  # scores move by ~0.02 when the decay is dropped: far above 1e-4
    )
    return directory, svd_readout


async def test_lifelong_scores_equal_the_training_path_whatever_the_arrival_order(
    make_settings: SettingsFactory, lifelong_dir: tuple[Path, bool], store_url: str | None
) -> None:
    directory, readout = lifelong_dir
    # items 1..20 then 1..9 again: repeats for the repeat channel to count
    history = [event("u", t % 20 + 1, float(t), ("click", None)[t % 2]) for t in range(29)]
    shuffled = history[:]
    random.Random(1).shuffle(shuffled)
    arrivals = {"whole": [history], "blocks": [shuffled[i : i + 3] for i in range(0, 29, 3)]}
    settings = make_settings(model_path=directory, redis_url=store_url)
    async with running_app(settings) as (_, client):
        model = (await client.get("/model")).json()
        assert model["default_mode"] == "lifelong"
        modes = ["svd", "svd_exact", "softmax", "lifelong"] if readout else ["lifelong"]
        assert model["modes"] == modes
        expected = {mode: offline_scores(directory, history, CANDIDATES, mode) for mode in modes}
        for user, blocks in arrivals.items():
            for block in blocks:
                await ingest(client, [{**e, "user_id": user} for e in block])
            for mode in [None, *modes]:  # None: no mode in the body, the model's own
                body = {"user_id": user, "candidates": CANDIDATES}
                response = await client.post("/rank", json=body | ({"mode": mode} if mode else {}))
                assert response.status_code == 200, response.text
                assert response.json()["mode"] == (mode or "lifelong")
                got = {i["item_id"]: i["score"] for i in response.json()["items"]}
                for c, want in zip(CANDIDATES, expected[mode or "lifelong"], strict=True):
                    assert got[c] == pytest.approx(want, abs=1e-4), (user, mode, c)
            await client.delete(f"/users/{user}")
        if not readout:  # a mode the model does not serve is a clear 422, not a 500
            body = {"user_id": "u", "candidates": CANDIDATES, "mode": "svd"}
            assert (await client.post("/rank", json=body)).status_code == 422
