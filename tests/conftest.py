"""Shared fixtures.

Async tests use the anyio pytest plugin on asyncio only: mark them ``@pytest.mark.anyio``
(or set ``pytestmark = pytest.mark.anyio``); async fixtures then run in the test's event loop.

Store tests use a real, private ``redis-server`` (``solar_tools/redis_server.py``) started
once per session on a free loopback port (never 6379); ``redis_url`` flushes it before each
test. ``cluster_url`` does the same for a real 3-master Redis Cluster. A missing redis-server
binary fails the tests that need it instead of skipping them.

``device`` is the torch device of the device-aware tests (``SOLAR_TEST_DEVICE``, default cpu).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from solar_tools.redis_server import RedisClusterServers, RedisServer


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
