"""Shared fixtures.

Async tests use the anyio pytest plugin on asyncio only: mark them ``@pytest.mark.anyio``
(or set ``pytestmark = pytest.mark.anyio``); async fixtures then run in the test's event loop.

Store tests use a real, private ``redis-server`` (``solar_tools/redis_server.py``) started
once per session on a free loopback port (never 6379); ``redis_url`` flushes it before each
test. ``cluster_url`` does the same for a real 3-master Redis Cluster. A missing redis-server
binary fails the tests that need it instead of skipping them.

History tests use a real, private PostgreSQL (``solar_tools/postgres_server.py``: initdb and
pg_ctl on a free port, never the shared server on 5432) started once per session; a missing
PostgreSQL fails them with a clear message instead of skipping them.

``device`` is the torch device of the device-aware tests (``SOLAR_TEST_DEVICE``, default cpu).
``serve_http`` starts a threaded stdlib HTTP server on a free loopback port for a handler
class (a stub of the service for client-side tests), shut down after the test.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from solar_tools.postgres_server import PostgresServer
from solar_tools.redis_server import RedisClusterServers, RedisServer

ServeHttp = Callable[[type[BaseHTTPRequestHandler]], str]


@pytest.fixture
def serve_http() -> Iterator[ServeHttp]:
    """``serve_http(Handler)`` → the base URL of a server running ``Handler`` in a thread."""
    servers: list[ThreadingHTTPServer] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the device-aware tests (serving pass, staging, scorer) run: ``SOLAR_TEST_DEVICE``,
    ``cpu`` unless ``bench/gpu.sh`` runs them again with ``cuda``, so both run the same code."""
    return torch.device(os.environ.get("SOLAR_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the whole session; tests may stop/pause/start it."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's Redis, running and empty (FLUSHDB) at the start of the test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A private 3-master Redis Cluster for the whole session."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterServers) -> str:
    """``redis+cluster://`` URL of the session's cluster, every master flushed."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL 15 for the whole session (its data deleted at the end); tests
    may stop it (even ``immediate``, like a crash) and start it again."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of the session's PostgreSQL, running (started again if a test left it stopped)."""
    if not (postgres_server.datadir / "postmaster.pid").exists():
        postgres_server.start()
    return postgres_server.url()


@pytest.fixture
def shared_history(postgres_url: str) -> dict[str, str]:
    """Settings overrides for a durable history that several apps or processes share: the
    session's PostgreSQL, in a schema of this test's own (so users never carry over)."""
    return {"history_url": postgres_url, "history_schema": f"t_{uuid.uuid4().hex[:16]}"}
