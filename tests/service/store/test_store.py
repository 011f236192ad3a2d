"""Store semantics, run against MemoryStore and RedisStore (a real, private redis-server)."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator

import anyio
import pytest
import redis
import redis.exceptions

from service.errors import InvalidUserId, StoreError, StoreUnavailable
from service.store.base import Store, UserRecord
from service.store.eventlog import RECORD_SIZE, LogFormatError, make_records
from service.store.keys import user_keys
from service.store.memory import MemoryStore
from service.store.redis_store import RedisStore
from solar_tools.redis_server import RedisServer, free_port

pytestmark = pytest.mark.anyio


class RecordingObserver:
    """A StoreObserver that keeps what it is told."""

    def __init__(self) -> None:
        self.ops: list[str] = []
        self.seconds: list[float] = []
        self.conflicts = 0

    def op_seconds(self, op: str, seconds: float) -> None:
        self.ops.append(op)
        self.seconds.append(seconds)

    def conflict(self) -> None:
        self.conflicts += 1


def records(*ids: int) -> bytes:
    """One 20-byte record per id (ts = item = id, event_id = "e<id>")."""
    return make_records(
        [float(i) for i in ids], list(ids), [None] * len(ids), [f"e{i}" for i in ids]
    ).tobytes()


def counter(n: int) -> bytes:
    return struct.pack("<q", n)


@pytest.fixture
def observer() -> RecordingObserver:
    return RecordingObserver()


@pytest.fixture(params=["memory", "redis"])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    """None for the MemoryStore, the URL of a flushed private Redis for the RedisStore."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def store(backend_url: str | None, observer: RecordingObserver) -> AsyncIterator[Store]:
    created: Store = (
        MemoryStore(observer=observer)
        if backend_url is None
        else RedisStore(backend_url, observer=observer)
    )
    yield created
    await created.close()


# ---- semantics shared by both stores ----------------------------------------------------------


async def test_unknown_user(store: Store) -> None:
    assert await store.get_state("nobody") is None
    assert await store.read("nobody") == UserRecord(state=None, log=b"", version=0)
    assert await store.delete("nobody") is False


async def test_first_write_then_read(store: Store) -> None:
    assert await store.write_if_unchanged("u", 0, b"S1", records(1, 2), log_cap=100)
    assert await store.get_state("u") == b"S1"
    assert await store.read("u") == UserRecord(state=b"S1", log=records(1, 2), version=1)
    assert await store.read("u", with_log=False) == UserRecord(state=b"S1", log=b"", version=1)


async def test_writes_append_in_order_and_bump_the_version(store: Store) -> None:
    for version in range(5):
        assert await store.write_if_unchanged("u", version, counter(version), records(version), 100)
    record = await store.read("u")
    assert record == UserRecord(state=counter(4), log=records(0, 1, 2, 3, 4), version=5)


async def test_stale_version_is_a_conflict_and_changes_nothing(
    store: Store, observer: RecordingObserver
) -> None:
    assert await store.write_if_unchanged("u", 0, b"S1", records(1), 100)
    before = await store.read("u")
    assert not await store.write_if_unchanged("u", 0, b"S2", records(2), 100)
    assert not await store.write_if_unchanged("u", 2, b"S2", records(2), 100)
    assert not await store.replace("u", 0, b"S3", records(3))
    assert await store.read("u") == before
    assert observer.conflicts == 3
    assert not await store.write_if_unchanged("new-user", 1, b"S", b"", 100)
    assert await store.read("new-user") == UserRecord(None, b"", 0)


async def test_log_is_trimmed_to_its_last_cap_records(store: Store) -> None:
    assert await store.write_if_unchanged("u", 0, b"S", records(1, 2, 3, 4, 5), log_cap=3)
    assert (await store.read("u")).log == records(3, 4, 5)
    assert await store.write_if_unchanged("u", 1, b"S", records(6), log_cap=3)
    assert (await store.read("u")).log == records(4, 5, 6)
    assert await store.write_if_unchanged("u", 2, b"S", b"", log_cap=2)  # a smaller cap trims too
    assert (await store.read("u")).log == records(5, 6)
    assert await store.write_if_unchanged("u", 3, b"S0", records(7), log_cap=0)
    assert await store.read("u") == UserRecord(state=b"S0", log=b"", version=4)


async def test_read_log_tail(store: Store) -> None:
    assert await store.write_if_unchanged("u", 0, b"S", records(1, 2, 3, 4), 100)
    assert (await store.read("u", log_tail=2)).log == records(3, 4)
    assert (await store.read("u", log_tail=4)).log == records(1, 2, 3, 4)
    assert (await store.read("u", log_tail=1000)).log == records(1, 2, 3, 4)
    assert await store.read("u", log_tail=0) == UserRecord(b"S", b"", 1)
    assert (await store.read("u", with_log=False, log_tail=2)).log == b""
    assert (await store.read("nobody", log_tail=3)).log == b""


async def test_replace_swaps_the_whole_log(store: Store) -> None:
    assert await store.write_if_unchanged("u", 0, b"old", records(1, 2, 3), 100)
    assert await store.replace("u", 1, b"new", records(7, 8))
    assert await store.read("u") == UserRecord(state=b"new", log=records(7, 8), version=2)
    assert await store.replace("u", 2, b"empty", b"")
    assert await store.read("u") == UserRecord(state=b"empty", log=b"", version=3)
    assert await store.replace("fresh", 0, b"F", records(1))
    assert await store.read("fresh") == UserRecord(state=b"F", log=records(1), version=1)


async def test_delete_forgets_the_user(store: Store) -> None:
    assert await store.write_if_unchanged("u", 0, b"S", records(1), 100)
    assert await store.write_if_unchanged("other", 0, b"O", records(2), 100)
    assert await store.delete("u") is True
    assert await store.read("u") == UserRecord(None, b"", 0)
    assert await store.delete("u") is False
    assert await store.read("other") == UserRecord(b"O", records(2), 1)
    assert await store.write_if_unchanged("u", 0, b"S'", b"", 100)  # version restarts at 0


async def test_users_are_isolated_and_blobs_are_binary_safe(store: Store) -> None:
    blob = bytes(range(256)) * 64  # 16 KiB with NUL bytes
    assert await store.write_if_unchanged("a", 0, blob, b"", 100)
    assert await store.write_if_unchanged("a:", 0, b"\x00", records(1), 100)
    assert await store.get_state("a") == blob
    assert await store.read("a:") == UserRecord(b"\x00", records(1), 1)
    assert await store.get_state("b") is None


async def test_stored_bytes_do_not_alias_the_callers_buffers(store: Store) -> None:
    state, log = bytearray(b"state"), bytearray(records(1))
    assert await store.write_if_unchanged("u", 0, state, log, 100)  # type: ignore[arg-type]
    state[:] = b"XXXXX"
    log[:] = bytes(len(log))
    assert await store.read("u") == UserRecord(b"state", records(1), 1)


async def test_invalid_arguments_are_rejected_before_any_change(store: Store) -> None:
    with pytest.raises(LogFormatError):
        await store.write_if_unchanged("u", 0, b"S", bytes(RECORD_SIZE + 1), 100)
    with pytest.raises(LogFormatError):
        await store.replace("u", 0, b"S", bytes(7))
    with pytest.raises(ValueError, match="log_cap"):
        await store.write_if_unchanged("u", 0, b"S", b"", -1)
    with pytest.raises(ValueError, match="log_tail"):
        await store.read("u", log_tail=-1)
    assert await store.read("u") == UserRecord(None, b"", 0)


async def test_invalid_user_ids_are_rejected(store: Store) -> None:
    for call in (
        lambda: store.get_state("a}b"),
        lambda: store.read(""),
        lambda: store.write_if_unchanged("a b", 0, b"S", b"", 1),
        lambda: store.replace("x" * 129, 0, b"S", b""),
        lambda: store.delete("{u}"),
    ):
        with pytest.raises(InvalidUserId):
            await call()


async def test_observer_gets_every_op(store: Store, observer: RecordingObserver) -> None:
    await store.ping()
    await store.get_state("u")
    await store.read("u")
    await store.write_if_unchanged("u", 0, b"S", b"", 1)
    await store.replace("u", 1, b"S", b"")
    await store.delete("u")
    assert observer.ops == ["ping", "get_state", "read", "write", "replace", "delete"]
    assert all(0.0 <= s < 5.0 for s in observer.seconds)
    assert observer.conflicts == 0


async def _increment(store: Store, user_id: str, times: int, log_cap: int) -> None:
    """Read-modify-write a counter in the state, retrying on conflicts."""
    for _ in range(times):
        while True:
            record = await store.read(user_id, with_log=False)
            value = struct.unpack("<q", record.state)[0] if record.state else 0
            await asyncio.sleep(0)  # let the other tasks interleave
            new = counter(value + 1)
            if await store.write_if_unchanged(
                user_id, record.version, new, records(value + 1), log_cap
            ):
                break


async def test_concurrent_increments_lose_nothing_in_memory() -> None:
    observer = RecordingObserver()
    store = MemoryStore(observer=observer)
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(_increment, store, "hot", 10, 50)
    record = await store.read("hot")
    assert record.state == counter(200) and record.version == 200
    assert record.log == records(*range(151, 201))
    assert observer.conflicts > 0  # the tasks really raced


# ---- Redis only ------------------------------------------------------------------------------


async def test_concurrent_increments_from_two_pools_lose_nothing(redis_url: str) -> None:
    observer = RecordingObserver()
    stores = [RedisStore(redis_url, observer=observer, max_connections=8) for _ in range(2)]
    try:
        async with anyio.create_task_group() as tg:
            for task in range(20):
                tg.start_soon(_increment, stores[task % 2], "hot", 10, 50)
        for store in stores:
            record = await store.read("hot")
            assert record.state == counter(200) and record.version == 200
            assert record.log == records(*range(151, 201))
        assert observer.conflicts > 0
    finally:
        for store in stores:
            await store.close()


async def test_redis_key_layout(redis_url: str) -> None:
    store = RedisStore(redis_url)
    try:
        assert await store.write_if_unchanged("u1", 0, b"S", records(1), 10)
    finally:
        await store.close()
    client = redis.Redis.from_url(redis_url)
    try:
        keys = user_keys("u1")
        assert sorted(client.keys("*")) == sorted(k.encode() for k in keys)
        assert client.get(keys.version) == b"1"
        assert client.get(keys.log) == records(1)
    finally:
        client.close()


async def test_redis_errors_do_not_leak(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.rpush(user_keys("u").state, b"not a string")
    finally:
        client.close()
    store = RedisStore(redis_url)
    try:
        with pytest.raises(StoreError) as info:
            await store.get_state("u")
        assert not isinstance(info.value, StoreUnavailable | redis.exceptions.RedisError)
        assert "WRONGTYPE" in str(info.value)
    finally:
        await store.close()


async def test_script_cache_flush_is_survived(redis_url: str) -> None:
    store = RedisStore(redis_url)
    try:
        assert await store.write_if_unchanged("u", 0, b"S", b"", 10)
        client = redis.Redis.from_url(redis_url)
        try:
            client.script_flush()
        finally:
            client.close()
        assert await store.write_if_unchanged("u", 1, b"S2", b"", 10)
        assert await store.get_state("u") == b"S2"
    finally:
        await store.close()


async def test_unavailable_while_stopped_then_recovers(redis_server: RedisServer) -> None:
    redis_server.flush()
    store = RedisStore(redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        assert await store.write_if_unchanged("u", 0, b"S", records(1), 10)
        redis_server.stop()
        for call in (
            store.ping,
            lambda: store.get_state("u"),
            lambda: store.read("u"),
            lambda: store.write_if_unchanged("u", 1, b"S", b"", 10),
            lambda: store.replace("u", 1, b"S", b""),
            lambda: store.delete("u"),
        ):
            start = time.perf_counter()
            with pytest.raises(StoreUnavailable) as info:
                await call()
            assert time.perf_counter() - start < 3.0
            assert redis_server.url.split("/")[2] in str(info.value)
            assert not isinstance(info.value, redis.exceptions.RedisError)
    finally:
        redis_server.start()
    try:
        # Same store object, no reconnect call: the pool replaces its dead connections and
        # the Lua script is loaded again (the restarted server has no data and no scripts).
        await store.ping()
        assert await store.read("u") == UserRecord(None, b"", 0)
        assert await store.write_if_unchanged("u", 0, b"again", records(2), 10)
        assert await store.read("u") == UserRecord(b"again", records(2), 1)
    finally:
        await store.close()


async def test_timeout_of_a_frozen_server_is_unavailable(redis_server: RedisServer) -> None:
    redis_server.flush()
    store = RedisStore(redis_server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        await store.ping()
        redis_server.pause()
        try:
            start = time.perf_counter()
            with pytest.raises(StoreUnavailable):
                await store.get_state("u")
            assert time.perf_counter() - start < 3.0
        finally:
            redis_server.resume()
        assert await store.get_state("u") is None
    finally:
        await store.close()


async def test_connect_retries_then_fails_clearly(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    observer = RecordingObserver()
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="service.store.redis_store"):
        with pytest.raises(StoreUnavailable) as info:
            await RedisStore.connect(
                f"redis://:hunter2@127.0.0.1:{port}/0",
                timeout_s=0.2,
                retries=2,
                backoff_s=0.05,
                observer=observer,
            )
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "3 attempts" in message
    assert "hunter2" not in message and "hunter2" not in caplog.text
    assert observer.ops == ["ping"] * 3
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
            store = await RedisStore.connect(redis_server.url, retries=20, backoff_s=0.05)
        try:
            await store.ping()
        finally:
            await store.close()
    finally:
        redis_server.start()


async def test_connect_rejects_negative_retries(redis_url: str) -> None:
    with pytest.raises(ValueError, match="retries"):
        await RedisStore.connect(redis_url, retries=-1)
