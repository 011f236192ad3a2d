"""FastAPI dependencies: typed ``Annotated`` aliases for what the lifespan puts on ``app.state``.

Every dependency is ``async def``: none blocks, and FastAPI runs a plain ``def`` dependency
in a worker thread, a thread hop per dependency per request (~0.1 ms each on a busy 2-core
machine, eight of them on /rank).

The long-lived objects (settings, metrics, store, stream, model, batcher) are read from
``app.state``; the use cases (``UserStates``, ``Ranking``, ``Ingestor``) are cheap dataclasses
built per request from them. So a test swaps any one piece with
``app.dependency_overrides[get_store] = lambda: other_store`` and every use case follows.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.core.ingest import Ingestor
from service.core.ranking import Ranking
from service.core.serving_model import ServingModel
from service.core.users import RebuildGate, UserStates
from service.errors import NotReady, Unauthorized
from service.history.base import HistoryStore
from service.metrics import Metrics
from service.scoring.batcher import MicroBatcher
from service.scoring.scorer import Ranked, RankJob
from service.settings import Settings
from service.store.base import Store
from service.stream.base import IngestStream

__all__ = [
    "BatcherDep",
    "IngestorDep",
    "MetricsDep",
    "ModelDep",
    "RankingDep",
    "SettingsDep",
    "StoreDep",
    "StreamDep",
    "UserStatesDep",
    "get_batcher",
    "get_ingestor",
    "get_stream",
    "get_metrics",
    "get_model",
    "get_ranking",
    "get_settings",
    "get_store",
    "get_user_states",
    "require_token",
]

RankBatcher = MicroBatcher[RankJob, Ranked]


def _running(request: Request, name: str) -> Any:
    """``app.state.<name>``, or 503 while the app is starting or stopping (it is None then)."""
    value = getattr(request.app.state, name, None)
    if value is None:
        raise NotReady(name)
    return value


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_store(request: Request) -> Store:
    store: Store = _running(request, "store")
    return store


async def get_model(request: Request) -> ServingModel:
    model: ServingModel = _running(request, "model")
    return model


async def get_batcher(request: Request) -> RankBatcher:
    batcher: RankBatcher = _running(request, "batcher")
    return batcher


async def get_stream(request: Request) -> IngestStream:
    stream: IngestStream = _running(request, "stream")
    return stream


async def get_history(request: Request) -> HistoryStore:
    history: HistoryStore = _running(request, "history")
    return history


async def get_rebuild_gate(request: Request) -> RebuildGate:
    gate: RebuildGate = _running(request, "rebuild_gate")
    return gate


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StoreDep = Annotated[Store, Depends(get_store)]
ModelDep = Annotated[ServingModel, Depends(get_model)]
BatcherDep = Annotated[RankBatcher, Depends(get_batcher)]
StreamDep = Annotated[IngestStream, Depends(get_stream)]
HistoryDep = Annotated[HistoryStore, Depends(get_history)]
RebuildGateDep = Annotated[RebuildGate, Depends(get_rebuild_gate)]


async def get_user_states(
    store: StoreDep,
    model: ModelDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    history: HistoryDep,
    rebuild_gate: RebuildGateDep,
) -> UserStates:
    return UserStates.create(
        settings, store, model, metrics, history=history, rebuild_gate=rebuild_gate
    )


UserStatesDep = Annotated[UserStates, Depends(get_user_states)]


async def get_ranking(users: UserStatesDep, metrics: MetricsDep, batcher: BatcherDep) -> Ranking:
    return Ranking(users=users, metrics=metrics, batcher=batcher)


async def get_ingestor(
    model: ModelDep,
    store: StoreDep,
    stream: StreamDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    history: HistoryDep,
) -> Ingestor:
    return Ingestor(
        store=store,
        stream=stream,
        metrics=metrics,
        history=history,
        dedup_window=settings.dedup_window,
        model_version=model.version,
        wait_s=settings.ingest_wait_s,
        grace_s=settings.sweep_grace_s,
    )


RankingDep = Annotated[Ranking, Depends(get_ranking)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]

_bearer = HTTPBearer(auto_error=False, description="SOLAR_API_TOKEN, when configured")


async def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless no token is configured or the bearer token matches (constant-time)."""
    expected = settings.token()
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise Unauthorized()
