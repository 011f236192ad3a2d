"""The Python client against the real service: in process (async, ASGI transport), against a
real `solar serve` (sync and async over TCP), with a real Redis outage for the 503 retries,
and against scripted answers where exact Retry-After timing is checked."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tqdm import tqdm

from bench.common.harness import service
from solar_tools.client import (
    AsyncSolarClient,
    Retry,
    SolarClient,
    SolarError,
    SolarHTTPError,
    SolarUnavailable,
)
from solar_tools.redis_server import RedisServer, free_port
from tests.service.support import ITEMS, RANK, event, running_app

pytestmark = pytest.mark.anyio

TOKEN = "s3cret"
IDS: list[int | str] = [int(i) if i.isdigit() else i for i in ITEMS]
HISTORY = [event("u1", IDS[i % len(IDS)], 1_000.0 + i, event_id=f"e{i}") for i in range(30)]


@pytest.fixture(scope="module")
def server_url(checkpoint_dir: Path) -> Iterator[str]:
    """A real `solar serve` (uvicorn, embedded store) with a bearer token."""
    with service(checkpoint_dir, None, env={"SOLAR_API_TOKEN": TOKEN, "SOLAR_WARMUP": "0"}) as u:
        yield u


def test_sync_client_against_a_real_server(server_url: str) -> None:
    with SolarClient(server_url, token=TOKEN) as solar:
        solar.wait_ready(timeout_s=5)
        model = solar.model()
        assert (model.r, model.vocabulary_size) == (RANK, len(ITEMS))
        assert model.modes == ("svd", "svd_exact", "softmax")
        assert solar.vocabulary(page_size=7) == IDS
        page = solar.items(offset=40, limit=10)
        assert page.items == ("alpha", "beta", "gamma") and page.total == len(ITEMS) and page.last
        assert solar.delete_user("u1") in (True, False)
        with tqdm(total=len(HISTORY), file=io.StringIO()) as bar:
            bulk = solar.ingest_many(HISTORY, batch_size=8, progress=bar)
            assert bar.n == len(HISTORY) and not bar.disable
        assert (bulk.accepted, bulk.duplicates, bulk.batches) == (30, 0, 4)
        again = solar.ingest(HISTORY[:5], wait=True)  # answers once all 30 are applied
        assert (again.accepted, again.duplicates, again.users) == (0, 5, 1)
        ranked = solar.rank("u1", [1, 2, "alpha", "nope"], top_k=3, mode="svd_exact")
        assert ranked.mode == "svd_exact" and ranked.history_length == 30
        assert len(ranked.items) == 3 and ranked.unknown_items == ("nope",)
        assert [i.score for i in ranked.items] == sorted(
            (i.score for i in ranked.items), reverse=True
        )
        user = solar.user("u1")
        assert user.history_length == 30 and len(user.singular_values) == RANK
        assert user.last_ts == 1_029.0 and user.model_version == model.version
        assert solar.delete_user("u1") is True
        with pytest.raises(SolarHTTPError) as missing:
            solar.user("u1")
        assert missing.value.status == 404


def test_sync_client_errors_are_typed(server_url: str) -> None:
    with SolarClient(server_url) as anonymous:
        with pytest.raises(SolarHTTPError) as denied:
            anonymous.rank("u1", [1])
        assert denied.value.status == 401
    with SolarClient(server_url, token=TOKEN) as solar:
        with pytest.raises(SolarHTTPError) as bad:
            solar.ingest([{"user_id": "u1", "item_id": 1, "ts": "yesterday"}])
        assert bad.value.status == 422 and bad.value.errors[0]["field"] == "body.events.0.ts"
        assert "body.events.0.ts" in str(bad.value)
        with pytest.raises(SolarHTTPError) as too_many:
            solar.items(limit=10_001)
        assert too_many.value.status == 422


async def test_async_client_against_a_real_server(server_url: str) -> None:
    events = [event(f"a{i % 3}", IDS[i % len(IDS)], 2_000.0 + i) for i in range(40)]
    async with AsyncSolarClient(server_url, token=TOKEN) as solar:
        await solar.wait_ready(timeout_s=5)
        bulk = await solar.ingest_many(iter(events), batch_size=5, concurrency=3)
        assert (bulk.accepted, bulk.batches, bulk.events) == (40, 8, 40)
        firsts = [next(e for e in events if e["user_id"] == f"a{k}") for k in range(3)]
        await asyncio.gather(*(solar.ingest([e], wait=True) for e in firsts))  # applied
        users = await asyncio.gather(*(solar.user(f"a{k}") for k in range(3)))
        assert [u.history_length for u in users] == [14, 13, 13]
        assert (await solar.rank("a0", IDS, top_k=2)).history_length == 14


def test_unreachable_service_fails_after_bounded_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with SolarClient(url, retry=Retry(attempts=3, default_wait_s=0.1)) as solar:
        started = time.monotonic()
        with pytest.raises(SolarError, match="GET /model at http://127.0.0.1"):
            solar.model()
        assert 0.2 <= time.monotonic() - started < 3.0  # two waits, then the third try fails
        with pytest.raises(SolarUnavailable, match="not ready after 0.3 s"):
            solar.wait_ready(timeout_s=0.3)


async def test_a_redis_outage_is_waited_out_with_retry_after(
    make_settings: Callable[..., Any], redis_url: str, redis_server: RedisServer
) -> None:
    """The real service answers 503 with Retry-After: 1 while Redis is down; the client waits
    and retries until Redis is back, and gives up when its attempts run out."""
    settings = make_settings(redis_url=redis_url, store_timeout_s=0.3)
    async with running_app(settings) as (_, http):
        solar = AsyncSolarClient(http=http, retry=Retry(attempts=8, max_wait_s=5.0))
        assert (await solar.ingest(HISTORY[:3])).accepted == 3
        redis_server.stop()
        try:
            impatient = AsyncSolarClient(http=http, retry=Retry(attempts=2, max_wait_s=0.1))
            with pytest.raises(SolarUnavailable) as down:
                await impatient.ingest(HISTORY[3:4])
            assert down.value.status == 503 and "store" in down.value.detail

            async def restart_later() -> None:
                await asyncio.sleep(1.2)
                await asyncio.to_thread(redis_server.start)

            started = time.monotonic()
            restart = asyncio.create_task(restart_later())
            answer = await solar.ingest(HISTORY[3:6])  # 503s until Redis is back
            waited = time.monotonic() - started
            await restart
        finally:
            if not redis_server.running:
                redis_server.start()
        assert answer.accepted == 3 and waited >= 1.0  # at least one Retry-After of 1 s
        rejected = (await http.get("/metrics")).text
        assert 'solar_rejected_total{reason="store_unavailable"}' in rejected


def _scripted(codes: list[tuple[int, str | None]], calls: list[float]) -> httpx.Client:
    """A sync httpx client whose transport answers ``codes`` (status, Retry-After) in turn,
    then 200 with an ingest answer; records the time of each request."""

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if codes:
            status, retry_after = codes.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return httpx.Response(status, headers=headers, json={"detail": "busy"})
        return httpx.Response(200, json={"accepted": 1, "duplicates": 0, "users": 1})

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://scripted")


def test_retry_after_is_honoured_and_capped() -> None:
    calls: list[float] = []
    retry = Retry(attempts=4, max_wait_s=0.5, default_wait_s=2.0)
    http = _scripted([(503, "0.3"), (503, "60"), (503, None)], calls)
    with pytest.raises(SolarUnavailable):  # the default wait would be 2 s: cut to 0.5 too
        SolarClient(http=http, retry=Retry(attempts=3, max_wait_s=0.5)).ingest(HISTORY[:1])
    calls.clear()
    http = _scripted([(503, "0.3"), (503, "60")], calls)
    answer = SolarClient(http=http, retry=retry).ingest(HISTORY[:1])
    assert answer.accepted == 1 and len(calls) == 3
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert 0.3 <= gaps[0] < 0.45  # Retry-After: 0.3
    assert 0.5 <= gaps[1] < 0.65  # Retry-After: 60, capped at max_wait_s


def test_only_503_is_retried() -> None:
    calls: list[float] = []
    with pytest.raises(SolarHTTPError) as refused:
        SolarClient(http=_scripted([(413, None)], calls)).ingest(HISTORY)
    assert refused.value.status == 413 and len(calls) == 1
    assert not isinstance(refused.value, SolarUnavailable)
