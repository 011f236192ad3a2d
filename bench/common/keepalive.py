"""Minimal HTTP/1.1 keep-alive clients: one blocking connection for sequential latency, and an
asyncio pool of them for the open-loop mixed load (``bench.common.mixed``).

A sequential client's own time adds to every latency it measures, and on a 2-core machine it
also takes a core from the server. httpx's ``AsyncClient`` costs ~0.75 ms of Python per
request here: GET /healthz took 0.93–1.13 ms p50 through it against 0.15–0.18 ms through this
client (same serve, same run), and a 2,048-candidate /rank 1.5–2.5 ms more. This client
writes the request bytes built once before the clock starts and reads the status line, the
headers and a ``Content-Length`` body, nothing else: no chunked bodies, no redirects, no TLS,
127.0.0.1 only. :class:`AsyncKeepAlivePool` does the same on asyncio streams for the mixed
load, where httpx's Python per request was the load generator's main cost: 2.4–3.3 ms of CPU
per request of the mix taken from the 2 cores the server runs on (0.4–0.7 ms through the
pool). Closed-loop and paced loads of ``bench.common.load`` keep httpx.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import NamedTuple
from urllib.parse import urlsplit

__all__ = ["REQUEST_ERRORS", "AsyncKeepAlivePool", "KeepAliveClient", "UnsupportedResponse"]


class UnsupportedResponse(RuntimeError):
    """The server answered with a body this client does not read (no Content-Length)."""


def _host_port(base_url: str) -> tuple[str, int]:
    """(host, port) of an ``http://host:port`` URL.

    Raises:
        ValueError: any other URL.
    """
    parts = urlsplit(base_url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise ValueError(f"expected http://host:port, got {base_url!r}")
    return parts.hostname, parts.port


def _request_head(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    """The request line and headers of one request, ending in the blank line (latin-1)."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Head(NamedTuple):
    """What this client reads of a response head."""

    status: int
    length: int  # Content-Length, bytes
    closes: bool  # ``Connection: close``: the server closes the connection after the body


def _parse_head(head: bytes) -> _Head:
    """The status line and headers of a response (without the blank line).

    Raises:
        UnsupportedResponse: no ``Content-Length``.
        ValueError: not an HTTP/1.1 status line, or a bad Content-Length.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length: int | None = None
    closes = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            closes = value.strip().lower() == b"close"
    if length is None:
        raise UnsupportedResponse(f"HTTP {status} without Content-Length")
    return _Head(status, length, closes)


class KeepAliveClient:
    """One TCP connection (Nagle off) to ``base_url``; requests are sent one at a time.

    Args:
        base_url: ``http://host:port`` of the service.
        headers: sent with every request (e.g. ``authorization``).
        timeout_s: socket timeout of each send and read, seconds.
    """

    def __init__(
        self, base_url: str, headers: dict[str, str] | None = None, timeout_s: float = 60.0
    ) -> None:
        hostname, port = _host_port(base_url)
        self._host = f"{hostname}:{port}"
        self._headers = dict(headers or {})
        self._sock = socket.create_connection((hostname, port), timeout=timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = self._sock.makefile("rb")

    def prepare(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> bytes:
        """The request's bytes (request line, headers, body), to send with :meth:`send`."""
        headers = self._headers
        if content_type is not None:
            headers = {**headers, "content-type": content_type}
        return _request_head(method, path, self._host, headers, body) + (body or b"")

    def send(self, request: bytes) -> tuple[int, bytes]:
        """Send prepared bytes and read the whole answer: (status code, body).

        Raises:
            UnsupportedResponse: an answer without ``Content-Length``.
            OSError, ValueError: the connection failed or the answer is not HTTP/1.1.
        """
        self._sock.sendall(request)
        head = bytearray()
        while (line := self._reader.readline()) not in (b"\r\n", b""):
            head += line
        parsed = _parse_head(bytes(head).rstrip(b"\r\n"))
        return parsed.status, self._reader.read(parsed.length)

    def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path``: (status code, body)."""
        return self.send(self.prepare("GET", path))

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> KeepAliveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# What :meth:`AsyncKeepAlivePool.post` raises when a request fails (its connection closed).
REQUEST_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    asyncio.TimeoutError,
    ValueError,
    UnsupportedResponse,
)


class AsyncKeepAlivePool:
    """Keep-alive connections to ``base_url`` on asyncio streams, opened as requests need
    them and reused: as many as requests were ever in flight at once.

    A request is sent once, never again: a connection that failed is closed and the request
    fails. So that a reused connection is not one the server has closed (uvicorn closes a
    connection idle for 5 s), a connection idle for longer than ``max_idle_s``, or whose end
    the server has closed, is dropped before it is used, and a response with
    ``Connection: close`` does not return its connection to the pool.

    Args:
        base_url: ``http://host:port`` of the service.
        headers: sent with every request (e.g. ``content-type``, ``authorization``).
        timeout_s: longest wait for a connection, and for one answer, seconds.
        max_idle_s: reuse only connections idle for less than this, seconds.
    """

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
        max_idle_s: float = 2.0,
    ) -> None:
        self._hostname, self._port = _host_port(base_url)
        self._host = f"{self._hostname}:{self._port}"
        self._headers = dict(headers or {})
        self.timeout_s, self.max_idle_s = timeout_s, max_idle_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._closed = False

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` to ``path``: (status code, body).

        Raises:
            One of :data:`REQUEST_ERRORS`: the request failed (its connection is closed).
        """
        request = _request_head("POST", path, self._host, self._headers, body) + body
        return await asyncio.wait_for(self._send(request), self.timeout_s)

    async def _send(self, request: bytes) -> tuple[int, bytes]:
        reader, writer = await self._connection()
        try:
            writer.write(request)
            head = _parse_head((await reader.readuntil(b"\r\n\r\n"))[:-4])
            answer = await reader.readexactly(head.length)
        except BaseException:
            writer.close()
            raise
        if head.closes or self._closed:
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return head.status, answer

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An idle connection still open and recently used, else a new one."""
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if not reader.at_eof() and now - since < self.max_idle_s:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self._hostname, self._port)

    async def aclose(self) -> None:
        """Close every idle connection, and each busy one when its answer has come."""
        self._closed = True
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()
