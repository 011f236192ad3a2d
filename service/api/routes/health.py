"""Operational routes: /healthz, /readyz and /metrics (docs/DESIGN.md §5)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import MetricsDep, ModelDep, SettingsDep, StoreDep
from service.api.schemas import Health
from service.errors import StoreError

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "store unreachable, or still starting"}},
    summary="Readiness",
)
async def readyz(settings: SettingsDep, store: StoreDep, model: ModelDep) -> Response:
    """Ready when the model is loaded and the store answers a ping (503 while the app starts
    or stops, before the dependencies exist)."""
    try:
        await asyncio.wait_for(store.ping(), 2 * settings.store_timeout_s)
    except (StoreError, TimeoutError) as exc:
        logger.warning("readyz: store unreachable: %s", exc)
        return _not_ready("store unreachable", settings.retry_after_s)
    return JSONResponse(Health(status="ready").model_dump())


def _not_ready(status: str, retry_after_s: int) -> JSONResponse:
    return JSONResponse(
        Health(status=status).model_dump(),
        status_code=503,
        headers={"Retry-After": str(retry_after_s)},
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics",
)
async def metrics(metrics: MetricsDep) -> Response:
    """All solar_* metrics of this process in the Prometheus text format."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
