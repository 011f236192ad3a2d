"""Models trained in `elastic` and `linear` (and `mean`), served over HTTP with real Redis.

One user's history ingested at once and another's, the same events in shuffled random blocks,
are ranked alike (≤ 1e-4) and as the offline evaluation of the checkpoint scores them;
the model serves only its own mode (422 naming it otherwise), and its users' states are of
its kind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import RankerConfig
from model.ranker import HistoryBatch, Ranker
from model.states import Decay
from model.vocabulary import Vocabulary
from solar_tools.redis_server import free_port
from tests.service.conftest import SettingsFactory
from tests.service.support import ACTIONS, DIM, ITEMS, event, ingest, running_app

pytestmark = pytest.mark.anyio

HALF_LIFE_S = 400.0


def _checkpoint(directory: Path, mode: str) -> Path:
    torch.manual_seed(7)
    config = RankerConfig(
        n_items=len(ITEMS) + 1,
        n_actions=len(ACTIONS) + 1,
        dim=DIM,
        heads=2,
        rank=4,
        oversample=12,
        mlp_hidden=16,
        mode=mode,
        elastic_tokens=6,
        half_life_s=HALF_LIFE_S,
    )
    ranker = Ranker(config)
    with torch.no_grad():  # embeddings large enough that a history moves the scores clearly
        ranker.item_emb.weight.normal_(0.0, 1.0)
        ranker.action_emb.weight.normal_(0.0, 0.5)
    save_checkpoint(directory, ranker, Vocabulary(ITEMS, ACTIONS))
    return directory


def _history(user: str, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        event(
            user,
            ITEMS[int(rng.integers(len(ITEMS)))],
            float(rng.uniform(0, 3_000)),
            ACTIONS[int(rng.integers(3))] if rng.random() < 0.7 else None,
            f"e{i}",
        )
        for i in range(70)
    ]


def _offline(
    checkpoint: Path, events: list[dict[str, Any]], cands: list[Any], mode: str
) -> dict[Any, float]:
    """``ranker(candidates, history, mode)`` of the checkpoint: the offline evaluation."""
    ckpt = load_checkpoint(checkpoint)
    vocab = ckpt.vocab
    items = torch.tensor([[vocab.item_row(e["item_id"]) for e in events]])
    actions = torch.tensor([[vocab.action_row(e.get("action")) for e in events]])
    ts = np.array([e["ts"] for e in events])
    w = torch.from_numpy(Decay(HALF_LIFE_S).weights(ts, ts.max())).float()[None]
    history = HistoryBatch(items, actions, torch.ones_like(items, dtype=torch.bool), w)
    rows = torch.tensor([[vocab.item_row(c) for c in cands]])
    with torch.no_grad():
        scores = ckpt.ranker(rows, history, mode)[0].tolist()
    return dict(zip(cands, scores, strict=True))


async def _scores(client: Any, user: str, cands: list[Any], mode: str) -> dict[Any, float]:
    response = await client.post("/rank", json={"user_id": user, "candidates": cands, "mode": mode})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == mode and len(body["items"]) == len(cands)
    return {item["item_id"]: item["score"] for item in body["items"]}


@pytest.mark.parametrize("mode", ["elastic", "linear", "mean"])
async def test_blocks_and_one_shot_and_offline_scores_agree(
    mode: str, make_settings: SettingsFactory, redis_url: str, tmp_path: Path
) -> None:
    checkpoint = _checkpoint(tmp_path / mode, mode)
    settings = make_settings(model_path=checkpoint, redis_url=redis_url, half_life_s=None)
    once = _history("once", 11)
    blocks = [dict(e, user_id="blocks") for e in once]
    order = np.random.default_rng(5).permutation(len(blocks))  # out of time order too
    cands = list(ITEMS[:30]) + [999_999]  # one unknown id
    async with running_app(settings) as (_, client):
        await ingest(client, once)
        cuts = [0, 1, 9, 10, 31, 50, 70]
        for start, stop in zip(cuts, cuts[1:], strict=False):
            await ingest(client, [blocks[i] for i in order[start:stop]])
        at_once = await _scores(client, "once", cands, mode)
        in_blocks = await _scores(client, "blocks", cands, mode)
        fresh = await _scores(client, "nobody", cands, mode)  # no history: ranked, not refused

        info = (await client.get("/model")).json()
        assert info["modes"] == [mode] and info["state_kind"] == mode
        user = (await client.get("/users/blocks")).json()
        assert (user["history_length"], user["pending"], user["state_kind"]) == (70, 0, mode)
        assert 0 < user["state_bytes"] <= 16 * 1024 and user["singular_values"] == []

        refused = await client.post(
            "/rank", json={"user_id": "once", "candidates": [1], "mode": "svd"}
        )
        assert refused.status_code == 422
        assert mode in refused.text and "served modes" in refused.text
    offline = _offline(checkpoint, once, cands, mode)
    for item, score in at_once.items():
        assert abs(in_blocks[item] - score) <= 1e-4
        assert abs(offline[item] - score) <= 1e-4
    assert max(abs(fresh[i] - at_once[i]) for i in cands) > 1e-3  # 10× the tolerance above


async def test_a_model_change_rebuilds_states_of_another_kind(
    make_settings: SettingsFactory,
    redis_url: str,
    tmp_path: Path,
    checkpoint_dir: Path,
    shared_history: dict[str, str],
) -> None:
    """Users first served by the svd model, then by an elastic one: their factors are rebuilt
    into elastic states from the log (the tag and kind differ), with the same scores as new."""
    history = _history("u", 3)
    async with running_app(make_settings(redis_url=redis_url, **shared_history)) as (_, client):
        await ingest(client, history)
        assert (await client.get("/users/u")).json()["state_kind"] == "svd"
    checkpoint = _checkpoint(tmp_path / "elastic", "elastic")
    settings = make_settings(
        model_path=checkpoint, redis_url=redis_url, half_life_s=None, **shared_history
    )
    async with running_app(settings) as (_, client):
        cands = list(ITEMS[:12])
        rebuilt = await _scores(client, "u", cands, "elastic")
        assert (await client.get("/users/u")).json()["state_kind"] == "elastic"
    offline = _offline(checkpoint, history, cands, "elastic")
    assert max(abs(rebuilt[i] - offline[i]) for i in cands) <= 1e-4


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["linear"])
def test_a_real_server_process_serves_the_state_mode(
    mode: str, redis_url: str, tmp_path: Path
) -> None:
    """`solar serve` as a uvicorn process on a socket, with its applier, on real Redis."""
    checkpoint = _checkpoint(tmp_path / mode, mode)
    port = free_port()
    env = {
        **os.environ,
        "SOLAR_MODEL_PATH": str(checkpoint),
        "SOLAR_REDIS_URL": redis_url,
        "SOLAR_MAX_WAIT_MS": "1",
    }
    log_path = tmp_path / "server.log"
    history = _history("p", 21)
    cands = list(ITEMS[:20])
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
                _wait_ready(client, proc, log_path)
                for start in range(0, len(history), 13):
                    block = {"events": history[start : start + 13]}
                    response = client.post("/ingest?wait=true", json=block)
                    assert response.status_code == 200, response.text
                response = client.post(
                    "/rank", json={"user_id": "p", "candidates": cands, "mode": mode}
                )
                assert response.status_code == 200, response.text
                served = {i["item_id"]: i["score"] for i in response.json()["items"]}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    offline = _offline(checkpoint, history, cands, mode)
    assert max(abs(served[i] - offline[i]) for i in cands) <= 1e-4


def _wait_ready(client: httpx.Client, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"solar serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if client.get("/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"solar serve not ready after 60 s:\n{log.read_text()}")
