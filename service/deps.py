"""FastAPI dependencies: typed aliases for the objects the lifespan puts on ``app.state``.

Tests swap any of them with ``app.dependency_overrides[get_store] = ...``.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.batcher import MicroBatcher
from service.errors import Unauthorized
from service.ingest import Ingestor
from service.metrics import Metrics
from service.ranking import Ranked, Ranking, RankJob
from service.runtime import ServingModel
from service.settings import Settings
from service.store import Store

__all__ = [
    "BatcherDep",
    "IngestorDep",
    "MetricsDep",
    "ModelDep",
    "RankingDep",
    "SettingsDep",
    "StoreDep",
    "require_token",
]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_model(request: Request) -> ServingModel:
    model: ServingModel = request.app.state.model
    return model


def get_batcher(request: Request) -> MicroBatcher[RankJob, Ranked]:
    batcher: MicroBatcher[RankJob, Ranked] = request.app.state.batcher
    return batcher


def get_ranking(request: Request) -> Ranking:
    ranking: Ranking = request.app.state.ranking
    return ranking


def get_ingestor(request: Request) -> Ingestor:
    ingestor: Ingestor = request.app.state.ingestor
    return ingestor


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StoreDep = Annotated[Store, Depends(get_store)]
ModelDep = Annotated[ServingModel, Depends(get_model)]
BatcherDep = Annotated[MicroBatcher[RankJob, Ranked], Depends(get_batcher)]
RankingDep = Annotated[Ranking, Depends(get_ranking)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]

_bearer = HTTPBearer(auto_error=False, description="SOLAR_API_TOKEN, when configured")


def require_token(
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
