"""The PostgreSQL connection pool: bounded, reuses healthy connections, drops broken ones."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from service.history.pool import ConnectionPool

pytestmark = pytest.mark.anyio


async def backend_pid(pool: ConnectionPool) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT pg_backend_pid()")
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def test_a_healthy_connection_is_reused(postgres_url: str) -> None:
    pool = ConnectionPool(postgres_url, size=2, timeout_s=2.0)
    try:
        assert await backend_pid(pool) == await backend_pid(pool)
    finally:
        await pool.close()


async def test_a_failed_use_drops_the_connection(postgres_url: str) -> None:
    pool = ConnectionPool(postgres_url, size=1, timeout_s=2.0)
    try:
        first = await backend_pid(pool)
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with pool.connection() as conn:
                await conn.execute("SELECT 1 / 0")
        assert await backend_pid(pool) != first
    finally:
        await pool.close()


async def test_at_most_size_connections_then_a_timeout(postgres_url: str) -> None:
    pool = ConnectionPool(postgres_url, size=1, timeout_s=0.2)
    try:
        async with pool.connection():
            with pytest.raises(TimeoutError):
                async with pool.connection():
                    pass
        await asyncio.wait_for(backend_pid(pool), 2)  # freed again
    finally:
        await pool.close()
    with pytest.raises(psycopg.InterfaceError, match="closed"):
        await backend_pid(pool)
