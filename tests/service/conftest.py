"""Fixtures of the service tests: a tiny random checkpoint, settings and running apps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi import FastAPI

from model.checkpoint import save_checkpoint
from model.config import RankerConfig
from model.ranker import Ranker
from model.vocabulary import Vocabulary
from service.settings import Settings
from tests.service.support import ACTIONS, DIM, ITEMS, OVERSAMPLE, RANK, running_app

SettingsFactory = Callable[..., Settings]


def _write_checkpoint(directory: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    config = RankerConfig(
        n_items=len(ITEMS) + 1,
        n_actions=len(ACTIONS) + 1,
        dim=DIM,
        heads=2,
        rank=RANK,
        oversample=OVERSAMPLE,
        mlp_hidden=16,
    )
    ranker = Ranker(config)
    with torch.no_grad():
        ranker.action_emb.weight.normal_(0.0, 0.1)  # zero by default; make actions matter
    save_checkpoint(directory, ranker, Vocabulary(ITEMS, ACTIONS))
    return directory


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint: 43 items (ints 1..40 and three strings), 3 actions, d=16."""
    return _write_checkpoint(tmp_path_factory.mktemp("model"), seed=0)


@pytest.fixture(scope="session")
def other_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same vocabulary and shapes, other weights: another model version."""
    return _write_checkpoint(tmp_path_factory.mktemp("model2"), seed=1)


@pytest.fixture
def make_settings(checkpoint_dir: Path) -> SettingsFactory:
    """Settings for tests: the tiny model, embedded store, short waits; override any field."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "model_path": checkpoint_dir,
            "redis_url": None,
            "api_token": None,
            "max_wait_ms": 1.0,
            "store_timeout_s": 0.5,
            "store_connect_retries": 1,
            "store_backoff_s": 0.05,
            "half_life_s": None,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """Each test using it runs on the embedded store and on the session's real Redis."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def app_client(
    make_settings: SettingsFactory, store_url: str | None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_app(make_settings(redis_url=store_url)) as pair:
        yield pair


@pytest.fixture
def client(app_client: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_client[1]
