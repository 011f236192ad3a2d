"""The FastAPI application: ``create_app`` builds it, the lifespan brings it up and down.

Startup loads the checkpoint, connects the store (bounded retries), starts the micro-batcher,
warms the pass's batch shapes up on its threads, then freezes the start-up heap out of the
garbage collector's reach and starts the stall monitor (``service.runtime``). Shutdown (after
uvicorn stopped accepting requests) drains the batch queue and closes the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api.docs import install_docs
from service.api.errors import install_error_handlers
from service.api.middleware import BodyLimitMiddleware, RequestMetricsMiddleware
from service.api.routes import (
    health_router,
    ingest_router,
    model_router,
    rank_router,
    users_router,
)
from service.api.schemas import IngestRequest, RankRequest
from service.backends import open_backends
from service.core.applier import Applier
from service.core.model_versions import model_registered
from service.core.serving_model import load_serving_model
from service.core.users import RebuildGate
from service.metrics import Metrics
from service.runtime import StallMonitor, freeze_heap
from service.scoring.batcher import MicroBatcher
from service.scoring.precision import choose_dtype
from service.scoring.scorer import BatchScorer, Ranked, RankJob
from service.settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_DESCRIPTION = (
    "Online ranking with SOLAR SVD-Attention: per-user low-rank factors of lifelong "
    "histories, updated incrementally as events arrive; candidates attend to the r interest "
    "tokens in one micro-batched pass."
)


def _set_torch_threads(settings: Settings) -> None:
    """One intra-op thread per serve process by default: the pass's GEMMs are small
    (B·M × ≤128), so threads add synchronisation (and spin on a shared machine) rather than
    speed; more cores are used with more processes (SOLAR_WORKERS, README "Threads")."""
    if torch.get_num_threads() != settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    _set_torch_threads(settings)
    model = await asyncio.to_thread(load_serving_model, settings)
    metrics.set_model(model.version, model.rank, model.dim)
    shared = settings.applier == "external" or settings.workers > 1
    backends = await open_backends(
        settings,
        metrics.store_observer(),
        history_observer=metrics.history_observer(),
        shares_redis="solar serve" if shared else None,
    )
    applier: Applier | None = None
    applier_task: asyncio.Task[None] | None = None
    stalls = StallMonitor(metrics)
    try:
        async with model_registered(backends.models, settings, model):
            ranker = model.checkpoint.ranker
            dtype = await asyncio.to_thread(choose_dtype, ranker, model.rank, settings.serve_dtype)
            scorer = BatchScorer(
                ranker, settings.history_batch_elements, dtype, metrics, settings.pass_rows
            )
            batcher: MicroBatcher[RankJob, Ranked] = MicroBatcher(
                scorer.score_pass,
                max_batch=settings.max_batch,
                max_wait_s=settings.max_wait_s,
                max_queue=settings.max_queue,
                workers=settings.batch_threads,
                metrics=metrics,
                split=scorer.passes,
            )
            batcher.start()
            if settings.warmup:
                await batcher.prime(
                    lambda: scorer.warm_up(
                        model.rank,
                        model.served_modes,
                        settings.warmup_candidates,
                        settings.max_batch,
                    )
                )
            if settings.gc_freeze:
                freeze_heap()
            stalls.start()
            if settings.applier == "inline":
                applier = backends.applier(settings, model, metrics)
                applier_task = asyncio.create_task(applier.run(), name="solar-applier")
            app.state.model = model
            app.state.store = backends.store
            app.state.stream = backends.stream
            app.state.history = backends.history
            app.state.batcher = batcher
            app.state.rebuild_gate = RebuildGate(
                settings.read_rebuilds, settings.read_rebuild_queue
            )
            logger.info(
                "solar ready: model %s, max_batch %d, applier %s",
                model.version,
                settings.max_batch,
                settings.applier,
            )
            try:
                yield
            finally:
                await batcher.stop()
                app.state.model = app.state.batcher = None
    finally:
        await stalls.stop()
        if applier is not None and applier_task is not None:
            applier.stop()
            await asyncio.gather(applier_task, return_exceptions=True)
        await backends.close()
        app.state.store = app.state.stream = app.state.history = None


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """OpenAPI generator adding the schemas of the hand-read /ingest and /rank bodies."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (IngestRequest, RankRequest):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(body.pop("$defs", {}))
                schemas[model.__name__] = body
            app.openapi_schema = document
        return app.openapi_schema

    return openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app (no I/O here: the lifespan loads the model and connects the store).

    Args:
        settings: configuration; ``Settings()`` (the ``SOLAR_*`` environment) when None.
    """
    settings = settings if settings is not None else Settings()
    metrics = Metrics()
    app = FastAPI(
        title="solar",
        version="0.1.0",
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load assets from CDNs: install_docs serves them
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # outermost: times all
    for router in (rank_router, ingest_router, users_router, model_router, health_router):
        app.include_router(router)
    install_docs(app)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
