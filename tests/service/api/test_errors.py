"""Bad input of every kind gets its documented 4xx and leaves stored state unchanged; an
unreachable store or a full queue is a 503 with Retry-After; nothing here is ever a 500."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Request

from service.api.deps import get_batcher, get_store
from service.api.errors import handle_error
from service.app import create_app
from service.errors import (
    HistoryUnavailable,
    InvalidInput,
    PayloadTooLarge,
    QueueFull,
    StoreBusy,
    StoreUnavailable,
)
from service.scoring.batcher import MicroBatcher
from service.scoring.scorer import BatchScorer, Ranked, RankJob
from service.store.memory import MemoryStore
from tests.service.conftest import SettingsFactory
from tests.service.support import event, ingest, running_app

pytestmark = pytest.mark.anyio

SEED = [event("u1", i, 100.0 + i, "like") for i in range(1, 6)]

BAD_RANK: list[tuple[str, Any, str]] = [
    ("braces in user_id", {"user_id": "a{b}", "candidates": [1]}, "body.user_id"),
    ("empty user_id", {"user_id": "", "candidates": [1]}, "body.user_id"),
    ("long user_id", {"user_id": "u" * 129, "candidates": [1]}, "body.user_id"),
    ("space in user_id", {"user_id": "a b", "candidates": [1]}, "body.user_id"),
    ("user_id not a string", {"user_id": 5, "candidates": [1]}, "body.user_id"),
    ("missing candidates", {"user_id": "u1"}, "body.candidates"),
    ("empty candidates", {"user_id": "u1", "candidates": []}, "body.candidates"),
    ("float item id", {"user_id": "u1", "candidates": [1.5]}, "body.candidates.0"),
    ("bool item id", {"user_id": "u1", "candidates": [True]}, "body.candidates.0"),
    ("null item id", {"user_id": "u1", "candidates": [None]}, "body.candidates.0"),
    ("object item id", {"user_id": "u1", "candidates": [{}]}, "body.candidates.0"),
    ("empty string id", {"user_id": "u1", "candidates": [""]}, "body.candidates.0"),
    ("top_k zero", {"user_id": "u1", "candidates": [1], "top_k": 0}, "body.top_k"),
    ("top_k huge", {"user_id": "u1", "candidates": [1], "top_k": 10**6}, "body.top_k"),
    ("top_k string", {"user_id": "u1", "candidates": [1], "top_k": "x"}, "body.top_k"),
    ("unknown mode", {"user_id": "u1", "candidates": [1], "mode": "linear"}, "body.mode"),
    ("extra field", {"user_id": "u1", "candidates": [1], "debug": 1}, "body.debug"),
    ("not an object", [1, 2], "body"),
]

BAD_EVENTS: list[tuple[str, Any, str]] = [
    ("negative ts", event("u1", 1, -1.0), "ts"),
    ("ts in milliseconds", event("u1", 1, 1.7e12), "ts"),
    ("string ts", {"user_id": "u1", "item_id": 1, "ts": "now"}, "ts"),
    ("missing ts", {"user_id": "u1", "item_id": 1}, "ts"),
    ("missing item", {"user_id": "u1", "ts": 1.0}, "item_id"),
    ("bad user", event("u}1", 1, 1.0), "user_id"),
    ("empty action", {**event("u1", 1, 1.0), "action": ""}, "action"),
    ("numeric event id", {**event("u1", 1, 1.0), "event_id": 7}, "event_id"),
    ("extra field", {**event("u1", 1, 1.0), "weight": 2}, "weight"),
]


async def _state(client: httpx.AsyncClient, user_id: str = "u1") -> Any:
    response = await client.get(f"/users/{user_id}")
    return response.json() if response.status_code == 200 else response.status_code


@pytest.mark.parametrize(("name", "body", "field"), BAD_RANK, ids=[c[0] for c in BAD_RANK])
async def test_bad_rank_request_is_422_naming_the_field(
    client: httpx.AsyncClient, name: str, body: Any, field: str
) -> None:
    response = await client.post("/rank", json=body)
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}


@pytest.mark.parametrize(("name", "bad", "field"), BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
async def test_bad_event_is_422_and_nothing_is_stored(
    client: httpx.AsyncClient, name: str, bad: Any, field: str
) -> None:
    await ingest(client, SEED)
    before = await _state(client)
    good = event("u1", 30, 500.0)
    response = await client.post("/ingest", json={"events": [good, bad]})
    assert response.status_code == 422, response.text
    assert f"body.events.1.{field}" in {e["field"] for e in response.json()["errors"]}
    assert await _state(client) == before  # the valid event of the request was not applied


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_ts_is_422(client: httpx.AsyncClient, token: str) -> None:
    raw = '{"events": [{"user_id": "u1", "item_id": 1, "ts": TS}]}'.replace("TS", token)
    response = await client.post(
        "/ingest", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert await _state(client) == 404


@pytest.mark.parametrize(
    "raw", ['{"user_id": "u1", "candidates": [1', "", "null", "\xff", '{"user_id": "u1"}}']
)
async def test_malformed_json_is_422(client: httpx.AsyncClient, raw: str) -> None:
    for path in ("/rank", "/ingest"):
        response = await client.post(
            path, content=raw.encode("latin-1"), headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (path, response.text)


async def test_wrong_content_type(client: httpx.AsyncClient) -> None:
    body = json.dumps({"events": SEED})
    response = await client.post("/ingest", content=body, headers={"content-type": "text/csv"})
    assert response.status_code == 415
    rank = await client.post("/rank", content="{}", headers={"content-type": "text/plain"})
    assert rank.status_code == 422


async def test_empty_events_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/ingest", json={"events": []})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.events"


async def test_bad_user_id_in_path_is_422(client: httpx.AsyncClient) -> None:
    for path in ("/users/a%7Bb%7D", "/users/" + "x" * 129, "/users/a%20b"):
        assert (await client.get(path)).status_code == 422, path
        assert (await client.delete(path)).status_code == 422, path


async def test_ndjson_bad_line_names_the_line(client: httpx.AsyncClient) -> None:
    await ingest(client, SEED)
    before = await _state(client)
    lines = [json.dumps(event("u1", 9, 900.0)), '{"user_id": "u1", "item_id": 2}', "{oops"]
    ndjson = {"content-type": "application/x-ndjson"}
    response = await client.post("/ingest", content="\n".join(lines), headers=ndjson)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "line 2.ts"
    response = await client.post("/ingest", content="\n".join(lines[::2]), headers=ndjson)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "line 2"
    empty = await client.post("/ingest", content="\n\n", headers=ndjson)
    assert empty.status_code == 422
    assert await _state(client) == before


async def test_limits_are_413_and_nothing_is_stored(make_settings: SettingsFactory) -> None:
    settings = make_settings(max_candidates=5, max_events=3, max_body_bytes=2_048)
    async with running_app(settings) as (_, client):
        await ingest(client, SEED[:3])
        before = await _state(client)
        rank = await client.post("/rank", json={"user_id": "u1", "candidates": list(range(6))})
        assert rank.status_code == 413
        too_many = [event("u1", i, 1_000.0 + i) for i in range(4)]
        assert (await client.post("/ingest", json={"events": too_many})).status_code == 413
        ndjson = "\n".join(json.dumps(e) for e in too_many)
        response = await client.post(
            "/ingest", content=ndjson, headers={"content-type": "application/x-ndjson"}
        )
        assert response.status_code == 413
        assert await _state(client) == before
        metrics = (await client.get("/metrics")).text
        assert 'solar_rejected_total{reason="too_large"} 3.0' in metrics


async def test_body_limit_is_enforced_while_reading(make_settings: SettingsFactory) -> None:
    async with running_app(make_settings(max_body_bytes=2_048)) as (app, client):
        sent = 0

        async def endless() -> AsyncIterator[bytes]:  # chunked: no Content-Length
            nonlocal sent
            line = (json.dumps(event("u1", 1, 1.0)) + "\n").encode()
            for _ in range(10_000):
                sent += len(line)
                yield line

        response = await client.post(
            "/ingest", content=endless(), headers={"content-type": "application/x-ndjson"}
        )
        assert response.status_code == 413
        assert sent < 10 * 2_048  # refused long before the whole body was produced
        big = {"user_id": "u1", "candidates": list(range(2_000))}
        declared = await client.post("/rank", json=big)  # Content-Length over the limit
        assert declared.status_code == 413
        assert await _state(client) == 404


class _DownStore(MemoryStore):
    """A store whose every operation fails as if Redis were unreachable."""

    async def get_state(self, user_id: str, version: str) -> bytes | None:
        raise StoreUnavailable("down")

    async def read_log(self, user_id: str, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("down")

    async def append_batch(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("down")

    async def position(self, user_id: str, version: str) -> Any:
        raise StoreUnavailable("down")

    async def delete(self, user_id: str) -> bool:
        raise StoreUnavailable("down")

    async def ping(self) -> None:
        raise StoreUnavailable("down")


async def test_store_unavailable_is_503_with_retry_after(make_settings: SettingsFactory) -> None:
    async with running_app(make_settings(retry_after_s=3)) as (app, client):
        down = _DownStore()
        app.dependency_overrides[get_store] = lambda: down
        calls = [
            client.post("/rank", json={"user_id": "u1", "candidates": [1]}),
            client.post("/ingest", json={"events": SEED}),
            client.get("/users/u1"),
            client.delete("/users/u1"),
        ]
        for response in await asyncio.gather(*calls):
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "3"
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["Retry-After"] == "3"


async def test_full_queue_is_503_at_once(make_settings: SettingsFactory) -> None:
    settings = make_settings(max_queue=1, max_batch=1, max_wait_ms=0.0)
    async with running_app(settings) as (app, client):
        loop = asyncio.get_running_loop()
        scoring, release = asyncio.Event(), asyncio.Event()
        scorer = BatchScorer(app.state.model.checkpoint.ranker, settings.history_batch_elements)

        def blocked(jobs: Any) -> Any:  # runs in the batch thread
            loop.call_soon_threadsafe(scoring.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
            return scorer(jobs)

        batcher: MicroBatcher[RankJob, Ranked] = MicroBatcher(
            blocked, max_batch=1, max_wait_s=0.0, max_queue=1
        )
        batcher.start()
        app.dependency_overrides[get_batcher] = lambda: batcher
        body = {"user_id": "u1", "candidates": [1, 2]}
        first = asyncio.create_task(client.post("/rank", json=body))
        await asyncio.wait_for(scoring.wait(), 5)  # the first request is being scored
        second = asyncio.create_task(client.post("/rank", json=body))
        while batcher.depth < 1:  # the second waits in the queue
            await asyncio.sleep(0.002)
        third = await asyncio.wait_for(client.post("/rank", json=body), 2.0)
        assert third.status_code == 503
        assert third.headers["Retry-After"] == "1"
        release.set()
        assert (await first).status_code == 200 and (await second).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'solar_rejected_total{reason="queue_full"} 1.0' in metrics
        await batcher.stop()


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (InvalidInput("body.x", "bad"), 422),
        (PayloadTooLarge("events", 3), 413),
        (QueueFull(4), 503),
        (StoreBusy(5), 503),
        (StoreUnavailable("x"), 503),
        (HistoryUnavailable("x"), 503),
        (RuntimeError("a bug"), 500),
    ],
)
async def test_handler_maps_domain_errors(
    make_settings: SettingsFactory, exc: Exception, status: int
) -> None:
    app = create_app(make_settings())
    request = Request({"type": "http", "app": app, "method": "POST", "path": "/x", "headers": []})
    response = await handle_error(request, exc)
    assert response.status_code == status
    assert ("Retry-After" in response.headers) == (status == 503)


async def test_method_not_allowed_lists_every_method(client: httpx.AsyncClient) -> None:
    response = await client.put("/users/u1")
    assert response.status_code == 405
    assert response.headers["Allow"] == "DELETE, GET"
    assert (await client.get("/rank")).headers["Allow"] == "POST"


async def test_whole_floats_are_integers(client: httpx.AsyncClient) -> None:
    body = {"user_id": "u1", "candidates": [1.0, 2], "top_k": 1.0}
    response = await client.post("/rank", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["items"][0]["item_id"] in (1, 2)


async def test_requests_before_startup_get_503_not_500(make_settings: SettingsFactory) -> None:
    """Without the lifespan (starting or stopping) the routes answer 503 with Retry-After."""
    app = create_app(make_settings())
    transport = httpx.ASGITransport(app=app)  # runs no lifespan: nothing is loaded
    requests = [
        ("POST", "/rank", {"user_id": "u1", "candidates": [1]}),
        ("POST", "/ingest", {"events": [event("u1", 1, 1.0)]}),
        ("GET", "/users/u1", None),
        ("GET", "/model", None),
    ]
    async with httpx.AsyncClient(transport=transport, base_url="http://solar") as client:
        for method, path, body in requests:
            response = await client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert "Retry-After" in response.headers


async def test_history_unavailable_names_the_history_and_its_reason(
    make_settings: SettingsFactory,
) -> None:
    app = create_app(make_settings(retry_after_s=2))
    app.state.settings = make_settings(retry_after_s=2)
    request = Request({"type": "http", "app": app, "method": "POST", "path": "/x", "headers": []})
    response = await handle_error(request, HistoryUnavailable("postgres down"))
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert json.loads(bytes(response.body)) == {"detail": "history unavailable: postgres down"}
    store = await handle_error(request, StoreUnavailable("redis down"))
    assert json.loads(bytes(store.body)) == {"detail": "store unavailable: redis down"}
