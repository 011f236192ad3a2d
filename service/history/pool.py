"""A small asyncio pool of PostgreSQL connections: at most ``size`` open, broken ones dropped.

One pool per process (``PostgresHistory`` owns it). A connection is opened on demand and put
back after use unless the use failed (a failed, timed-out or cancelled call may leave the
wire protocol mid-message, so that connection is closed, never reused). psycopg-pool would
do the same with more features; this keeps the service's wheel set to ``psycopg[binary]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import psycopg
from psycopg import pq

__all__ = ["ConnectionPool"]


class ConnectionPool:
    """Up to ``size`` autocommit ``AsyncConnection``s to ``conninfo``.

    Args:
        conninfo: a libpq URL or ``key=value`` string.
        size: most connections open at once (≥ 1).
        timeout_s: connect timeout and longest wait for a free connection, seconds.
    """

    def __init__(self, conninfo: str, *, size: int, timeout_s: float) -> None:
        if size < 1:
            raise ValueError(f"pool size must be ≥ 1, got {size}")
        self._conninfo = conninfo
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection] = []
        self._closed = False

    async def _connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=max(1, round(self._timeout_s)),
            application_name="solar-history",
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection for one use; raises ``TimeoutError`` when none frees up in time.

        Raises:
            psycopg.OperationalError: connecting failed.
            TimeoutError: every connection stayed busy for ``timeout_s``.
        """
        if self._closed:
            raise psycopg.InterfaceError("the connection pool is closed")
        await asyncio.wait_for(self._slots.acquire(), self._timeout_s)
        try:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                yield conn
            except BaseException:
                await self._discard(conn)
                raise
            idle = pq.TransactionStatus.IDLE
            if self._closed or conn.closed or conn.info.transaction_status != idle:
                await self._discard(conn)
            else:
                self._idle.append(conn)
        finally:
            self._slots.release()

    @staticmethod
    async def _discard(conn: psycopg.AsyncConnection) -> None:
        with suppress(psycopg.Error, OSError):
            await conn.close()

    async def close(self) -> None:
        """Close the idle connections; connections in use close when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)
