"""`solar replay`: batching, retries, errors and the sources, against a scripted fake service
and the real app (in process, and a real `solar serve` for the command line)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.common.harness import service
from solar_tools import replay as replay_module
from solar_tools.client import AsyncSolarClient, SolarClient
from solar_tools.replay import (
    ReplayError,
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
        if request.url.path == "/model/items":
            offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
            ids = [1, 2, "x", 4, 5][offset : offset + limit]
            return httpx.Response(
                200, json={"offset": offset, "limit": limit, "total": 5, "items": ids}
            )
        assert request.url.path == "/ingest"
        assert request.headers["content-type"] == "application/x-ndjson"
        if self.script:
            code = self.script.pop(0)
            return httpx.Response(code, headers={"Retry-After": "0"}, json={"detail": "no"})
        events = [json.loads(line) for line in request.content.splitlines()]
        self.batches.append(events)
        ids = [e.get("event_id") or json.dumps(e, sort_keys=True) for e in events]
        fresh = [i for i in ids if i not in self.seen]
        self.seen.update(ids)
        users = {e["user_id"] for e in events}
        body = {"accepted": len(fresh), "duplicates": len(ids) - len(fresh), "users": len(users)}
        return httpx.Response(200, json=body)


def _client(handler: Handler) -> AsyncSolarClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://test")
    return AsyncSolarClient(http=http)


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


async def test_vocabulary_pages_through_model_items() -> None:
    async with _client(FakeService()) as client:
        assert await vocabulary(client, None) == [1, 2, "x", 4, 5]
        assert await client.vocabulary(page_size=2) == [1, 2, "x", 4, 5]
        assert await vocabulary(client, 3) == [1, 2, 3]


def test_main_returns_1_when_the_service_is_unreachable() -> None:
    code = replay_module.main(
        [
            "--url",
            "http://127.0.0.1:9",
            "--synthetic",
            "--users",
            "1",
            "--events",
            "1",
            "--wait-ready",
            "0.3",
            "--no-progress",
        ]
    )
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
    async with running_app(make_settings(redis_url=store_url)) as (_, http):
        client = AsyncSolarClient(http=http)
        assert await vocabulary(client, None) == items  # the served ids, as the checkpoint's
        result = await replay(client, events, batch_size=50, concurrency=2)
        assert (result.accepted, result.duplicates) == (360, 0)
        again = await replay(client, events[:100], batch_size=50)
        assert (again.accepted, again.duplicates) == (0, 100)
        for user in ("u0", "u1", "u2"):  # acknowledged; applied shortly after
            for _ in range(500):
                info = await client.user(user)
                if info.pending == 0:
                    break
                await asyncio.sleep(0.01)
            assert info.history_length == 120 and info.pending == 0
        rank = await client.rank("u0", items, top_k=5)
        assert len(rank.items) == 5 and rank.unknown_items == ()


def test_checkpoint_items_keep_ids_that_are_not_canonical_integers(tmp_path: Path) -> None:
    items = ["42", "007", "²", "Heat (1995)"]
    (tmp_path / "config.json").write_text(json.dumps({"items": items}))
    assert checkpoint_items(str(tmp_path)) == [42, "007", "²", "Heat (1995)"]


def _shop_csv(path: Path, items: list[int | str]) -> Path:
    lines = ["customer_id,sku,event_time"]
    for u in range(3):
        for j in range(10):
            lines.append(f"c{u},{items[(u * 7 + j) % len(items)]},2024-05-01T12:00:{j:02d}Z")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_solar_replay_of_a_log_file_into_a_real_server(
    checkpoint_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The command line end to end: a shop's CSV (other column names, ISO times) streamed into
    a real `solar serve` with a bearer token, then read back with the sync client."""
    log = _shop_csv(tmp_path / "shop.csv", checkpoint_items(str(checkpoint_dir)))
    env = {"SOLAR_API_TOKEN": "s3cret", "SOLAR_WARMUP": "0"}
    with service(checkpoint_dir, None, env=env) as url:
        argv = ["--url", url, "--dataset", str(log), "--batch-size", "7", "--token", "s3cret"]
        columns = ["--columns", "user=customer_id,item=sku,ts=event_time"]
        assert replay_module.main([*argv, *columns]) == 0
        assert "30/30" in capsys.readouterr().err  # the progress bar reached the end
        assert replay_module.main([*argv, *columns]) == 0  # idempotent: all duplicates
        with SolarClient(url, token="s3cret") as client:
            user = client.user("c1")
            assert user.history_length == 10 and user.last_ts == 1714564809.0
        assert replay_module.main([*argv, "--columns", "user=customer_id,item=product"]) == 1
        assert "no column 'product'" in caplog.text and str(log) in caplog.text
        assert replay_module.main([*argv[:-2], *columns]) == 1  # no token
        assert "HTTP 401" in caplog.text
