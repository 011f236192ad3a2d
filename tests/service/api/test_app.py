"""The HTTP contract of every route (DESIGN §5), on the embedded store and on real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from model.checkpoint import load_checkpoint
from tests.service.conftest import SettingsFactory
from tests.service.support import ITEMS, RANK, event, ingest, running_app

pytestmark = pytest.mark.anyio

HISTORY = [event("u1", i, 1_000.0 + i, "click" if i % 2 else None) for i in range(1, 21)]


async def test_rank_contract(client: httpx.AsyncClient, checkpoint_dir: Path) -> None:
    await ingest(client, HISTORY)
    candidates = [1, 2, "3", "alpha", 999, "nope", 7]
    response = await client.post(
        "/rank", json={"user_id": "u1", "candidates": candidates, "top_k": 5}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "user_id",
        "model_version",
        "mode",
        "history_length",
        "items",
        "unknown_items",
    }
    assert body["user_id"] == "u1"
    assert body["model_version"] == load_checkpoint(checkpoint_dir).version
    assert body["mode"] == "svd"
    assert body["history_length"] == len(HISTORY)
    assert len(body["items"]) == 5
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert {item["item_id"] for item in body["items"]} <= set(candidates)
    assert body["unknown_items"] == [999, "nope"]


@pytest.mark.parametrize("mode", ["svd", "svd_exact", "softmax"])
async def test_rank_every_mode_ranks_all_candidates(client: httpx.AsyncClient, mode: str) -> None:
    await ingest(client, HISTORY)
    candidates = list(range(1, 31))
    response = await client.post(
        "/rank", json={"user_id": "u1", "candidates": candidates, "mode": mode}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == mode
    assert sorted(item["item_id"] for item in body["items"]) == candidates  # default: all
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("mode", ["svd", "svd_exact", "softmax"])
async def test_rank_user_without_history(client: httpx.AsyncClient, mode: str) -> None:
    response = await client.post(
        "/rank", json={"user_id": "nobody", "candidates": [1, 2, 3], "mode": mode}
    )
    assert response.status_code == 200, response.text
    assert response.json()["history_length"] == 0
    assert len(response.json()["items"]) == 3


async def test_ingest_contract_and_duplicates(client: httpx.AsyncClient) -> None:
    events = [
        event("a", 1, 10.0, event_id="e1"),
        event("a", 2, 11.0, "like"),
        event("b", "alpha", 12.0),
        event("a", 1, 99.0, event_id="e1"),  # same event id: duplicate within the request
    ]
    assert await ingest(client, events) == {
        "accepted": 3,
        "duplicates": 1,
        "users": 2,
        "refused": 0,
    }
    again = await ingest(client, events[:3])  # re-sent: every one a duplicate
    assert again == {"accepted": 0, "duplicates": 3, "users": 2, "refused": 0}
    user = (await client.get("/users/a")).json()
    assert user["history_length"] == 2


async def test_ingest_ndjson(client: httpx.AsyncClient) -> None:
    lines = "\n".join(json.dumps(e) for e in HISTORY[:5]) + "\n\n"
    response = await client.post(
        "/ingest", content=lines, headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 5, "duplicates": 0, "users": 1, "refused": 0}


async def test_ingest_ndjson_streamed_in_chunks(client: httpx.AsyncClient) -> None:
    text = "\n".join(json.dumps(e) for e in HISTORY)  # no final newline

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(text), 37):  # chunk boundaries inside lines
            yield text[start : start + 37].encode()

    response = await client.post(
        "/ingest", content=chunks(), headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(HISTORY)


async def test_users_get_and_delete(client: httpx.AsyncClient, checkpoint_dir: Path) -> None:
    await ingest(client, HISTORY)
    response = await client.get("/users/u1")
    assert response.status_code == 200
    info = response.json()
    assert info["user_id"] == "u1"
    assert info["history_length"] == len(HISTORY)
    assert info["rank"] == RANK
    # The r served singular values (not ℓ = r + p padded with ~1e-16 noise), descending.
    assert len(info["singular_values"]) == RANK < len(HISTORY)
    assert info["singular_values"] == sorted(info["singular_values"], reverse=True)
    assert min(info["singular_values"]) > 1e-6 * info["singular_values"][0]
    assert 0.0 <= info["residual_ratio"] <= 1.0
    assert info["last_ts"] == HISTORY[-1]["ts"]
    assert info["model_version"] == load_checkpoint(checkpoint_dir).version
    assert (await client.delete("/users/u1")).json() == {"user_id": "u1", "deleted": True}
    assert (await client.get("/users/u1")).status_code == 404
    assert (await client.delete("/users/u1")).json()["deleted"] is False
    rank = await client.post("/rank", json={"user_id": "u1", "candidates": [1]})
    assert rank.json()["history_length"] == 0


async def test_a_short_history_shows_zeros_not_noise(client: httpx.AsyncClient) -> None:
    await ingest(client, [event("short", 1, 10.0), event("short", 2, 11.0)])  # rank 2 < r
    values = (await client.get("/users/short")).json()["singular_values"]
    assert len(values) == RANK and values[0] >= values[1] > 1e-3 * values[0]
    assert values[2:] == [0.0] * (RANK - 2)  # no ~1e-16 rounding noise


async def test_health_routes(client: httpx.AsyncClient, checkpoint_dir: Path) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    model = (await client.get("/model")).json()
    assert model["version"] == load_checkpoint(checkpoint_dir).version
    assert model["vocabulary_size"] == len(ITEMS)  # the rest: tests/service/api/routes/
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "solar_model_info{" in metrics.text


async def test_openapi_describes_every_field(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert {
        "/rank",
        "/ingest",
        "/users/{user_id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/model",
        "/model/items",
    } <= set(document["paths"])
    schemas = document["components"]["schemas"]
    for name in ("RankRequest", "Event", "IngestRequest", "RankResponse", "UserInfo"):
        for field, spec in schemas[name]["properties"].items():
            has_text = "description" in spec or "$ref" in spec or name == "RankResponse"
            assert has_text or field == "user_id", (name, field)
    ingest_body = document["paths"]["/ingest"]["post"]["requestBody"]["content"]
    assert set(ingest_body) == {"application/json", "application/x-ndjson"}
    assert (await client.get("/docs")).status_code == 200


async def test_bearer_token(make_settings: SettingsFactory) -> None:
    async with running_app(make_settings(api_token="s3cret")) as (_, client):
        body = {"user_id": "u1", "candidates": [1, 2]}
        assert (await client.post("/rank", json=body)).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        response = await client.post("/rank", json=body, headers=wrong)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret"}
        assert (await client.post("/rank", json=body, headers=good)).status_code == 200
        events = {"events": [event("u1", 1, 1.0)]}
        assert (await client.post("/ingest", json=events)).status_code == 401
        assert (await client.post("/ingest", json=events, headers=good)).status_code == 200
        assert (await client.get("/users/u1")).status_code == 401
        assert (await client.get("/users/u1", headers=good)).status_code == 200
        assert (await client.delete("/users/u1")).status_code == 401
        for path in ("/healthz", "/readyz", "/metrics", "/model", "/model/items"):
            assert (await client.get(path)).status_code == 200, path


async def test_app_fixture_exposes_state(app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, _ = app_client
    assert app.state.model is not None and app.state.batcher is not None


async def test_pass_rows_setting_reaches_the_scorer(make_settings: SettingsFactory) -> None:
    """SOLAR_PASS_ROWS=2048: the warm-up (2,048 candidates a request) scores one request per
    pass, so fewer new pass shapes than with the default of four to a pass."""

    async def new_shapes(**overrides: object) -> float:
        async with running_app(make_settings(**overrides)) as (_, client):
            text = (await client.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "solar_pass_seconds_count" and sample.labels["shape"] == "new":
                    return sample.value
        raise AssertionError("no solar_pass_seconds{shape=new} after the warm-up")

    one_per_pass = await new_shapes(pass_rows=2_048)
    four_per_pass = await new_shapes()
    assert 0 < one_per_pass < four_per_pass
