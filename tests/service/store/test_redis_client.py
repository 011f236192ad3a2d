"""The Redis client: connect retries, 503-type errors while Redis is away, recovery."""

from __future__ import annotations

import logging
import time

import anyio
import pytest
import redis

from service.errors import StoreFull, StoreUnavailable
from service.store.base import AppendRequest, AppendResult
from service.store.dedup_ring import digests
from service.store.eventlog import identity_keys, make_records
from service.store.redis_client import connect_redis, make_client, redact
from service.store.redis_store import RedisStore
from solar_tools.redis_server import RedisServer, free_port

pytestmark = pytest.mark.anyio
V1 = "v1"  # the model version of the states written here


def _one_event() -> tuple[bytes, bytes]:
    recs = make_records([1.0], [1], [None], ["e1"])
    return recs.tobytes(), digests(identity_keys(recs))


async def _append(store: RedisStore, recs: bytes, digs: bytes) -> AppendResult:
    return (
        await store.append_batch([AppendRequest("u", recs, digs)], dedup_window=50, create=True)
    )[0]


async def test_unavailable_while_stopped_then_recovers(redis_server: RedisServer) -> None:
    redis_server.flush()
    url = redis_server.url
    store = RedisStore(make_client(url, timeout_s=0.5), url)
    recs, idents = _one_event()
    try:
        await _append(store, recs, idents)
        redis_server.stop()
        for call in (
            store.ping,
            lambda: store.get_state("u", V1),
            lambda: store.position("u", V1),
            lambda: store.read_log("u", V1, unapplied_only=True),
            lambda: _append(store, recs, idents),
            lambda: store.commit_state("u", V1, b"S", gen=0, expected_applied=0, applied=1),
            lambda: store.delete("u"),
        ):
            start = time.perf_counter()
            with pytest.raises(StoreUnavailable) as info:
                await call()  # type: ignore[operator]
            assert time.perf_counter() - start < 3.0
            assert url.split("/")[2] in str(info.value)
            assert not isinstance(info.value, redis.exceptions.RedisError)
    finally:
        redis_server.start()
    try:
        # Same client, no reconnect call: the pool replaces its dead connections and the
        # scripts are loaded again (the restarted server has no data and no scripts).
        await store.ping()
        result = await _append(store, recs, idents)
        assert result.accepted == 1 and result.seq == 1
    finally:
        await store.close()


async def test_timeout_of_a_frozen_server_is_unavailable(redis_server: RedisServer) -> None:
    redis_server.flush()
    store = RedisStore(make_client(redis_server.url, timeout_s=0.2), redis_server.url)
    try:
        await store.ping()
        redis_server.pause()
        try:
            start = time.perf_counter()
            with pytest.raises(StoreUnavailable):
                await store.get_state("u", V1)
            assert time.perf_counter() - start < 3.0
        finally:
            redis_server.resume()
        assert await store.get_state("u", V1) is None
    finally:
        await store.close()


async def test_connect_retries_then_fails_clearly(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="service.store.redis_client"):
        with pytest.raises(StoreUnavailable) as info:
            await connect_redis(
                f"redis://:hunter2@127.0.0.1:{port}/0", timeout_s=0.2, retries=2, backoff_s=0.05
            )
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "3 attempts" in message
    assert "hunter2" not in message and "hunter2" not in caplog.text
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert 0.05 + 0.1 <= elapsed < 5.0  # slept the two backoffs, then gave up


async def test_connect_waits_for_a_late_server(redis_server: RedisServer) -> None:
    redis_server.stop()

    def start_later() -> None:
        time.sleep(0.3)
        redis_server.start()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, start_later)
            client = await connect_redis(redis_server.url, retries=20, backoff_s=0.05)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    finally:
        redis_server.start()


async def test_connect_rejects_negative_retries(redis_url: str) -> None:
    with pytest.raises(ValueError, match="retries"):
        await connect_redis(redis_url, retries=-1)


async def test_a_cluster_url_uses_the_cluster_client(cluster_url: str) -> None:
    client = await connect_redis(cluster_url)
    try:
        assert type(client).__name__ == "RedisCluster"
        assert len(client.get_primaries()) == 3
    finally:
        await client.aclose()


def test_redact_hides_the_password() -> None:
    assert redact("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact("redis://h:1/0") == "redis://h:1/0"


async def test_a_full_redis_refuses_appends_as_store_full_but_still_frees(
    redis_server: RedisServer,
) -> None:
    """maxmemory reached under noeviction: an append is ``StoreFull`` (a 503, never a 500),
    while the scripts that free memory (mark durable, commit: they trim the tail) still run."""
    redis_server.flush()
    url = redis_server.url
    store = RedisStore(make_client(url, timeout_s=0.5), url)
    raw = redis.Redis.from_url(url)
    recs, digs = _one_event()
    try:
        first = await _append(store, recs, digs)
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", "1")  # every byte over: writes that grow memory refused
        with pytest.raises(StoreFull) as info:
            await _append(store, *_one_event_at(2.0))
        assert info.value.reason == "store_full" and "full" in str(info.value)
        await store.mark_durable([("u", first.seq)])
        assert await store.commit_state("u", V1, b"S", gen=0, expected_applied=0, applied=first.seq)
        assert (await store.read_log("u", V1, unapplied_only=False)).length == 0  # trimmed
    finally:
        raw.config_set("maxmemory", "0")
        raw.close()
        await store.close()


def _one_event_at(ts: float) -> tuple[bytes, bytes]:
    recs = make_records([ts], [1], [None], [f"e{ts}"])
    return recs.tobytes(), digests(identity_keys(recs))
