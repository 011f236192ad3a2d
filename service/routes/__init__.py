"""One router per resource: rank, ingest, users, health (DESIGN §5)."""

from __future__ import annotations

from service.routes.health import router as health_router
from service.routes.ingest import router as ingest_router
from service.routes.rank import router as rank_router
from service.routes.users import router as users_router

__all__ = ["health_router", "ingest_router", "rank_router", "users_router"]
