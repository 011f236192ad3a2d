"""One router per resource: rank, ingest, users, model, health (docs/DESIGN.md §5)."""

from __future__ import annotations

from service.api.routes.health import router as health_router
from service.api.routes.ingest import router as ingest_router
from service.api.routes.model import router as model_router
from service.api.routes.rank import router as rank_router
from service.api.routes.users import router as users_router

__all__ = ["health_router", "ingest_router", "model_router", "rank_router", "users_router"]
