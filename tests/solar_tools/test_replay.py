"""`solar replay`: batching, retries, errors and the synthetic source, against a fake service."""

from __future__ import annotations

import asyncio

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from solar_tools import replay as replay_module
from solar_tools.replay import (
    ReplayError,
    batched,
    checkpoint_items,
    replay,
    synthetic_events,
    vocabulary,
)
from tests.service.support import running_app

pytestmark = pytest.mark.anyio

Handler = Callable[[httpx.Request], httpx.Response]


class FakeService:
    """Records the /ingest batches; answers like solar (accepted / duplicates by event id)."""

    def __init__(self, script: list[int] | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.seen: set[str] = set()
        self.script = list(script or [])  # status codes to answer first, then 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            return httpx.Response(200, json={"ready": True})
        if request.url.path == "/model":
            return httpx.Response(200, json={"version": "v", "n_items": 6})
        assert request.url.path == "/ingest"
        if self.script:
            code = self.script.pop(0)
            return httpx.Response(code, headers={"Retry-After": "0"}, json={"detail": "no"})
        events = json.loads(request.content)["events"]
        self.batches.append(events)
        ids = [e.get("event_id") or json.dumps(e, sort_keys=True) for e in events]
        fresh = [i for i in ids if i not in self.seen]
        self.seen.update(ids)
        users = {e["user_id"] for e in events}
        body = {"accepted": len(fresh), "duplicates": len(ids) - len(fresh), "users": len(users)}
        return httpx.Response(200, json=body)


def _client(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://test")


def test_synthetic_events_are_per_user_time_ordered_and_in_vocabulary() -> None:
    items: list[int | str] = ["a", "b", "c", 7]
    events = list(synthetic_events(3, 50, items, user_prefix="x", seed=1))
    assert len(events) == 150
    assert [e["user_id"] for e in events[:50]] == ["x0"] * 50
    assert {e["user_id"] for e in events} == {"x0", "x1", "x2"}
    for u in ("x0", "x1", "x2"):
        ts = [e["ts"] for e in events if e["user_id"] == u]
        assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert {e["item_id"] for e in events} <= set(items)
    assert len({e["event_id"] for e in events}) == 150
    assert events == list(synthetic_events(3, 50, items, user_prefix="x", seed=1))


def test_batched_keeps_order_and_sizes() -> None:
    chunks = list(batched(({"i": i} for i in range(7)), 3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert [e["i"] for c in chunks for e in c] == list(range(7))


async def test_replay_sends_every_event_once_in_batches() -> None:
    service = FakeService()
    events = list(synthetic_events(2, 25, [1, 2, 3]))
    async with _client(service) as client:
        result = await replay(client, events, batch_size=10, concurrency=3)
    assert result.accepted == 50 and result.duplicates == 0 and result.batches == 5
    sent = sorted((e for b in service.batches for e in b), key=lambda e: e["event_id"])
    assert sent == sorted(events, key=lambda e: e["event_id"])
    assert max(len(b) for b in service.batches) == 10


async def test_replaying_twice_reports_duplicates() -> None:
    service = FakeService()
    events = list(synthetic_events(1, 12, [1, 2]))
    async with _client(service) as client:
        await replay(client, events, batch_size=5)
        again = await replay(client, events, batch_size=5)
    assert (again.accepted, again.duplicates) == (0, 12)


async def test_503_is_retried_then_succeeds() -> None:
    service = FakeService(script=[503, 503])
    async with _client(service) as client:
        result = await replay(client, synthetic_events(1, 3, [1]), batch_size=3)
    assert result.accepted == 3


async def test_413_stops_with_a_hint() -> None:
    service = FakeService(script=[413])
    async with _client(service) as client:
        with pytest.raises(ReplayError, match="smaller --batch-size"):
            await replay(client, synthetic_events(1, 3, [1]), batch_size=3)


async def test_vocabulary_from_model_info_excludes_the_oov_row() -> None:
    async with _client(FakeService()) as client:
        assert await vocabulary(client, None) == [1, 2, 3, 4, 5]
        assert await vocabulary(client, 3) == [1, 2, 3]


def test_main_returns_1_when_the_service_is_unreachable() -> None:
    code = replay_module.main(
        ["--url", "http://127.0.0.1:9", "--synthetic", "--users", "1", "--events", "1",
         "--wait-ready", "0.3", "--no-progress"]
    )  # fmt: skip
    assert code == 1


def test_main_rejects_a_bad_batch_size() -> None:
    with pytest.raises(SystemExit) as exc:
        replay_module.main(["--synthetic", "--batch-size", "0"])
    assert exc.value.code == 2


async def test_replay_into_the_real_app_builds_histories(
    make_settings: Callable[..., Any], store_url: str | None, checkpoint_dir: Path
) -> None:
    items = checkpoint_items(str(checkpoint_dir))
    assert "alpha" in items and 1 in items  # strings stay strings, decimal ids become ints
    events = list(synthetic_events(3, 120, items, seed=3))
    async with running_app(make_settings(redis_url=store_url)) as (_, client):
        result = await replay(client, events, batch_size=50, concurrency=2)
        assert (result.accepted, result.duplicates) == (360, 0)
        again = await replay(client, events[:100], batch_size=50)
        assert (again.accepted, again.duplicates) == (0, 100)
        for user in ("u0", "u1", "u2"):  # acknowledged; applied shortly after
            for _ in range(500):
                body = (await client.get(f"/users/{user}")).json()
                if body.get("pending") == 0:
                    break
                await asyncio.sleep(0.01)
            assert body["history_length"] == 120, body
        rank = await client.post("/rank", json={"user_id": "u0", "candidates": items, "top_k": 5})
        assert rank.status_code == 200 and len(rank.json()["items"]) == 5


def test_checkpoint_items_keep_ids_that_are_not_canonical_integers(tmp_path: Path) -> None:
    items = ["42", "007", "²", "Heat (1995)"]
    (tmp_path / "config.json").write_text(json.dumps({"items": items}))
    assert checkpoint_items(str(tmp_path)) == [42, "007", "²", "Heat (1995)"]
