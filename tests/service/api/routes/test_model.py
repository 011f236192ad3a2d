"""GET /model (a few numbers, not the vocabulary) and GET /model/items (paging, bounds)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from model.checkpoint import load_checkpoint
from service.api.schemas import MAX_ITEMS_PAGE
from tests.service.support import ACTIONS, ITEMS, RANK

pytestmark = pytest.mark.anyio

# ITEMS as the API writes them: decimal ids as integers, the others as strings.
EXPECTED_IDS = [int(i) if i.isdigit() else i for i in ITEMS]


async def test_model_info_is_small_and_complete(
    client: httpx.AsyncClient, checkpoint_dir: Path
) -> None:
    response = await client.get("/model")
    assert response.status_code == 200, response.text
    info = response.json()
    assert "items" not in info  # the vocabulary is paged by /model/items, never inlined
    assert info["version"] == load_checkpoint(checkpoint_dir).version
    assert (info["d"], info["r"]) == (info["dim"], info["rank"]) == (16, RANK)
    assert info["modes"] == ["svd", "svd_exact", "softmax"]
    assert info["default_mode"] == "svd"  # an svd model's /rank without a mode
    assert info["state_kind"] == "svd"
    assert info["vocabulary_size"] == len(ITEMS)
    assert info["n_items"] == len(ITEMS) + 1  # + the OOV row
    assert info["actions"] == list(ACTIONS)
    assert info["oversample"] >= 0 and info["device"] == "cpu"


async def test_items_pages_cover_the_vocabulary_once_in_order(client: httpx.AsyncClient) -> None:
    seen: list[int | str] = []
    offset = 0
    while True:
        response = await client.get("/model/items", params={"offset": offset, "limit": 10})
        assert response.status_code == 200, response.text
        page = response.json()
        assert (page["offset"], page["limit"], page["total"]) == (offset, 10, len(ITEMS))
        seen += page["items"]
        if len(page["items"]) < 10:
            break
        offset += 10
    assert seen == EXPECTED_IDS
    assert all(type(i) is int for i in seen[:40]) and seen[40:] == ["alpha", "beta", "gamma"]


async def test_items_default_page_and_past_the_end(client: httpx.AsyncClient) -> None:
    whole = (await client.get("/model/items")).json()
    assert whole["offset"] == 0 and whole["items"] == EXPECTED_IDS
    past = (await client.get("/model/items", params={"offset": 10_000})).json()
    assert past["items"] == [] and past["total"] == len(ITEMS)


async def test_items_ranked_back_are_known(client: httpx.AsyncClient) -> None:
    ids = (await client.get("/model/items", params={"limit": 5})).json()["items"]
    rank = await client.post("/rank", json={"user_id": "u1", "candidates": ids})
    assert rank.status_code == 200 and rank.json()["unknown_items"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": MAX_ITEMS_PAGE + 1}, "query.limit"),
        ({"limit": 0}, "query.limit"),
        ({"offset": -1}, "query.offset"),
        ({"offset": "x"}, "query.offset"),
    ],
)
async def test_items_bounds_are_422_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, object], field: str
) -> None:
    response = await client.get("/model/items", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


async def test_items_paging_is_documented(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/model/items"]["get"]
    params = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert params["limit"]["maximum"] == MAX_ITEMS_PAGE and params["limit"]["minimum"] == 1
    assert params["offset"]["minimum"] == 0
    assert "422" in operation["responses"]
    assert "items" not in document["components"]["schemas"]["ModelInfo"]["properties"]
