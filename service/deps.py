"""FastAPI dependencies: typed aliases for the objects the lifespan puts on ``app.state``.

Tests swap any of them with ``app.dependency_overrides[get_store] = ...``.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import NotReady, Unauthorized
from service.ingest import Ingestor
from service.metrics import Metrics
from service.ranking import Ranking
from service.runtime import ServingModel
from service.settings import Settings
from service.store import Store

__all__ = [
    "IngestorDep",
    "MetricsDep",
    "ModelDep",
    "RankingDep",
    "SettingsDep",
    "StoreDep",
    "require_token",
]


def _running(request: Request, name: str) -> Any:
    """``app.state.<name>``, or 503 while the app is starting or stopping (it is None then)."""
    value = getattr(request.app.state, name, None)
    if value is None:
        raise NotReady(name)
    return value


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_store(request: Request) -> Store:
    store: Store = _running(request, "store")
    return store


def get_model(request: Request) -> ServingModel:
    model: ServingModel = _running(request, "model")
    return model


def get_ranking(request: Request) -> Ranking:
    ranking: Ranking = _running(request, "ranking")
    return ranking


def get_ingestor(request: Request) -> Ingestor:
    ingestor: Ingestor = _running(request, "ingestor")
    return ingestor


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StoreDep = Annotated[Store, Depends(get_store)]
ModelDep = Annotated[ServingModel, Depends(get_model)]
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
