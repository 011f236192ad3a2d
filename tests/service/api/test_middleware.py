"""The ASGI middlewares on a bare Starlette app: the body limit while reading, the request timer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from service.api.middleware import BodyLimitMiddleware, BodyTooLarge, RequestMetricsMiddleware
from service.metrics import Metrics

pytestmark = pytest.mark.anyio


async def _echo_length(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=413)


def _app(metrics: Metrics, limit: int) -> Starlette:
    app = Starlette(
        routes=[Route("/echo/{name}", _echo_length, methods=["POST"])],
        exception_handlers={BodyTooLarge: _too_large},
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=limit)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app


async def test_bodies_up_to_the_limit_pass_and_larger_ones_are_413() -> None:
    metrics = Metrics()
    transport = httpx.ASGITransport(app=_app(metrics, limit=100))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/echo/a", content=b"x" * 100)).text == "100"
        assert (await client.post("/echo/a", content=b"x" * 101)).status_code == 413

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            for _ in range(10):
                yield b"x" * 30

        assert (await client.post("/echo/a", content=chunked())).status_code == 413


async def test_requests_are_timed_by_route_template_and_status() -> None:
    metrics = Metrics()
    transport = httpx.ASGITransport(app=_app(metrics, limit=100))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.post("/echo/one", content=b"x")
        await client.post("/echo/two", content=b"x" * 500)
        await client.get("/nowhere")
    sample = metrics.registry.get_sample_value
    count = "solar_request_duration_seconds_count"
    assert sample(count, {"route": "/echo/{name}", "status": "200"}) == 1
    assert sample(count, {"route": "/echo/{name}", "status": "413"}) == 1
    assert sample(count, {"route": "unmatched", "status": "404"}) == 1
