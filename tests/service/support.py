"""Helpers shared by the service tests: a running app with a client, event builders, and the
batch reference the stored factors must match."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI

from model.checkpoint import load_checkpoint
from model.states import LowRankState
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
