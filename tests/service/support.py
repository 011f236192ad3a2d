"""Helpers shared by the service tests: a running app with a client, event builders, the
batch reference the stored factors must match, and a bounded wait for a condition."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from fastapi import FastAPI

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import RankerConfig
from model.ranker import HistoryBatch, Ranker
from model.states import LowRankState
from model.vocabulary import Vocabulary
from service.app import create_app
from service.settings import Settings

ITEMS: tuple[str, ...] = tuple(str(i) for i in range(1, 41)) + ("alpha", "beta", "gamma")
ACTIONS: tuple[str, ...] = ("click", "like", "share")
# dim 16, rank 4, oversample 12: ℓ = d, so incremental factors equal batch ones exactly.
DIM, RANK, OVERSAMPLE = 16, 4, 12


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan running and an in-process HTTP client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://solar.test") as client:
            yield app, client


def event(
    user_id: str,
    item_id: int | str,
    ts: float,
    action: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": user_id, "item_id": item_id, "ts": ts}
    if action is not None:
        body["action"] = action
    if event_id is not None:
        body["event_id"] = event_id
    return body


def reference_state(
    checkpoint_dir: str, events: Sequence[dict[str, Any]], rank: int = RANK
) -> LowRankState:
    """``LowRankState.from_rows`` of the events' rows (no decay), through the model's tables."""
    ckpt = load_checkpoint(checkpoint_dir)
    items = [ckpt.vocab.item_row(e["item_id"]) for e in events]
    actions = [ckpt.vocab.action_row(e.get("action")) for e in events]
    item_w = ckpt.ranker.item_emb.weight.detach().numpy().astype(np.float64)
    action_w = ckpt.ranker.action_emb.weight.detach().numpy().astype(np.float64)
    rows = item_w[items] + action_w[actions]  # (N, d) in float64 of the float32 tables
    ts = np.array([e["ts"] for e in events], dtype=np.float64)
    return LowRankState.from_rows(rows, rank, oversample=OVERSAMPLE, ts=ts)


def gram(state: LowRankState) -> np.ndarray:
    """V diag(σ²) Vᵀ (d×d): the weighted Gram matrix the factors hold, sign-free."""
    return (state.V * state.sigma[None, :] ** 2) @ state.V.T


async def ingest(client: httpx.AsyncClient, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/ingest?wait=true", json={"events": list(events)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def small_checkpoint(directory: Path, seed: int, weight_gain: float = 1.0, **config: Any) -> Path:
    """A random checkpoint of the test vocabulary (d = DIM, r = RANK, 2 heads) with
    ``config`` (e.g. ``recent_tokens``, ``mode``) and non-trivial action rows, saved in
    ``directory``; ``weight_gain`` scales the attention and MLP matrices (a larger gain makes
    the scores depend more on the context, so a test can see a small change in it)."""
    torch.manual_seed(seed)
    ranker = Ranker(
        RankerConfig(
            n_items=len(ITEMS) + 1,
            n_actions=len(ACTIONS) + 1,
            dim=DIM,
            heads=2,
            rank=RANK,
            oversample=OVERSAMPLE,
            mlp_hidden=16,
            **config,
        )
    )
    with torch.no_grad():
        ranker.action_emb.weight.normal_(0.0, 0.3)
        for module in (ranker.attn, ranker.mlp, ranker.readout):
            for weight in () if module is None else module.parameters():
                if weight.dim() == 2:
                    weight.mul_(weight_gain)
    save_checkpoint(directory, ranker, Vocabulary(ITEMS, ACTIONS))
    return directory


def offline_scores(
    directory: Path, history: Sequence[dict[str, Any]], candidates: Sequence[Any], mode: str
) -> list[float]:
    """The training path's scores of ``candidates`` for the time-sorted ``history``, its
    events weighted by the checkpoint's ``half_life_s`` (age from the latest event) as in
    ``model.events.windows.history_batch``."""
    ckpt = load_checkpoint(directory)
    ordered = sorted(history, key=lambda e: e["ts"])
    items = torch.tensor([[ckpt.vocab.item_row(e["item_id"]) for e in ordered]])
    actions = torch.tensor([[ckpt.vocab.action_row(e.get("action")) for e in ordered]])
    weights = torch.ones(items.shape)
    half_life_s = ckpt.ranker.config.half_life_s
    if half_life_s is not None:
        ts = torch.tensor([[float(e["ts"]) for e in ordered]], dtype=torch.float64)
        age = ts[:, -1:] - ts
        weights = torch.exp(-age * math.log(2.0) / half_life_s).float()
    batch = HistoryBatch(items, actions, torch.ones_like(items, dtype=torch.bool), weights)
    cands = torch.tensor([[ckpt.vocab.item_row(c) for c in candidates]])
    with torch.no_grad():
        return [float(x) for x in ckpt.ranker(cands, batch, mode)[0]]


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` (plain or async) every 10 ms until it holds.

    Raises:
        TimeoutError: it did not hold within ``timeout_s`` (bounded: a hang fails the test).
    """

    async def holds() -> bool:
        value = condition()
        return bool(await value) if inspect.isawaitable(value) else bool(value)

    async def poll() -> None:
        while not await holds():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout_s)
