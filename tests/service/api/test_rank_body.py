"""POST /rank bodies: the fast decoder accepts exactly what pydantic accepts, and every refusal
answers what FastAPI answered for a ``body: RankRequest`` route (same status, same errors)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from service.api.errors import handle_error, install_error_handlers
from service.api.rank_body import decode_rank_body
from service.api.routes.rank import OFF_LOOP_BYTES
from service.api.schemas import Mode, RankRequest
from service.core.raw_ids import RawCandidates
from tests.service.support import event, ingest

pytestmark = pytest.mark.anyio

JSON = "application/json"


def _reference_app() -> FastAPI:
    """The route as it was declared before issue 11: FastAPI reads and validates the body."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/rank")
    async def rank(body: RankRequest) -> dict[str, Any]:
        return body.model_dump(mode="json")

    return app


BODIES: list[tuple[bytes, str | None]] = [
    (b'{"user_id": "u1", "candidates": [1, "a"]}', JSON),
    (b'{"user_id": "u1", "candidates": [ -5 , "a b",0]}', JSON),  # the raw scan's
    (b'{"user_id": "u1", "candidates": [12345678901234567890, "a\\u0062", -0, "\xc3\xa9"]}', JSON),
    (b'{"user_id": "u1", "candidates": [1.0, 2], "top_k": 2.0}', JSON),  # pydantic only
    (b'{"user_id": "u1\\n", "candidates": [1]}', JSON),
    (b'{"user_id": "a{b}", "candidates": [1], "top_k": 0, "mode": "linear"}', JSON),
    (b'{"user_id": "u1", "candidates": []}', JSON),
    (b'{"user_id": "u1", "candidates": [1], "mode": null}', JSON),  # the model's default
    (b'{"user_id": "u1", "candidates": [1], "mode": "bogus"}', JSON),
    (b'{"user_id": "u1", "candidates": [1], "debug": true}', JSON),
    (b'{"user_id": "u1", "candidates": [1], "top_k": true}', JSON),
    (b'{"user_id": "u1", "user_id": "b{", "candidates": [1]}', JSON),  # the last key wins
    (b'{"user_id": "u1", "candidates": [1', JSON),
    (b"[1, 2]", JSON),
    (b"null", JSON),
    (b"", JSON),
    (b"\xff", JSON),
    (b'{"user_id": "u1", "candidates": [1]}', "text/plain"),
    (b'{"user_id": "u1", "candidates": [1]}', None),
    (b'{"user_id": "u1", "candidates": [1]}', "application/vnd.solar+json; charset=utf-8"),
    ('{"user_id": "u1", "candidates": [1]}'.encode("utf-16"), JSON),
]


@pytest.mark.parametrize(("body", "content_type"), BODIES)
async def test_answers_match_the_fastapi_route(body: bytes, content_type: str | None) -> None:
    transport = httpx.ASGITransport(app=_reference_app())
    headers = {"content-type": content_type} if content_type else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://ref") as client:
        expected = await client.post("/rank", content=body, headers=headers)
    try:
        query = decode_rank_body(body, content_type)
    except Exception as exc:  # compared through the one error handler
        scope = {"type": "http", "app": FastAPI(), "method": "POST", "path": "/rank", "headers": []}
        response = await handle_error(Request(scope), exc)
        assert expected.status_code == response.status_code
        assert expected.json() == json.loads(bytes(response.body))
        return
    assert expected.status_code == 200, expected.text
    got = {
        "user_id": query.user_id,
        "candidates": list(query.candidates),
        "top_k": query.top_k,
        "mode": None if query.mode is None else query.mode.value,
    }
    assert got == expected.json()


def test_the_fast_paths_check_candidates() -> None:
    raw = decode_rank_body(b'{"user_id": "u1", "candidates": [7, "x"], "mode": "softmax"}', JSON)
    assert raw.checked and raw.mode is Mode.softmax and list(raw.candidates) == [7, "x"]
    assert isinstance(raw.candidates, RawCandidates)  # scanned from the bytes
    fast = decode_rank_body(b'{"user_id": "u1", "candidates": [7, "\\u0078"]}', JSON)
    assert fast.checked and fast.candidates == [7, "x"]  # an escape: msgspec decodes them
    accented = decode_rank_body('{"user_id": "u1", "candidates": [7, "é"]}'.encode(), JSON)
    assert accented.checked and accented.candidates == [7, "é"]  # non-ASCII: likewise
    slow = decode_rank_body(b'{"user_id": "u1", "candidates": [7.0]}', JSON)
    assert not slow.checked  # the use case checks (and converts) these itself


async def test_a_lone_surrogate_id_is_ranked_not_a_500(client: httpx.AsyncClient) -> None:
    raw = b'{"user_id": "u1", "candidates": ["\\ud800", 1], "top_k": 2}'
    response = await client.post("/rank", content=raw, headers={"content-type": JSON})
    assert response.status_code == 200, response.text
    assert response.json()["unknown_items"] == ["\ud800"]


async def test_a_large_body_is_decoded_off_the_loop_and_ranked(client: httpx.AsyncClient) -> None:
    await ingest(client, [event("u1", i, float(i)) for i in range(1, 10)])
    candidates = [f"unknown-item-{i:08d}" for i in range(6_000)] + [1, 2, "alpha"]
    body = json.dumps({"user_id": "u1", "candidates": candidates, "top_k": 3}).encode()
    assert len(body) > OFF_LOOP_BYTES
    response = await client.post("/rank", content=body, headers={"content-type": JSON})
    assert response.status_code == 200, response.text
    document = response.json()
    assert len(document["unknown_items"]) == 6_000 and len(document["items"]) == 3
