"""Minimal HTTP/1.1 keep-alive clients: one blocking connection for sequential latency, and an
asyncio pool of them for the open-loop mixed load (``bench.common.mixed``).

A sequential client's own time adds to every latency it measures, and on a 2-core machine it
also takes a core from the server. httpx's ``AsyncClient`` costs ~0.75 ms of Python per
request here: GET /healthz took 0.93–1.13 ms p50 through it against 0.15–0.18 ms through this
client (same serve, same run), and a 2,048-candidate /rank 1.5–2.5 ms more. This client
writes the request bytes built once before the clock starts and reads the status line, the
headers and a ``Content-Length`` body, nothing else: no chunked bodies, no redirects, no TLS,
127.0.0.1 only. :class:`AsyncKeepAlivePool` does the same on asyncio streams for the mixed
load, where httpx's Python per request was the load generator's main cost: 1.5–2 ms of CPU
per request of the mix taken from the 2 cores the server runs on. Closed-loop and paced
loads of ``bench.common.load`` keep httpx.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

__all__ = ["AsyncKeepAlivePool", "KeepAliveClient", "UnsupportedResponse"]


class UnsupportedResponse(RuntimeError):
    """The server answered with a body this client does not read (no Content-Length)."""


def _host_port(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise ValueError(f"expected http://host:port, got {base_url!r}")
    return parts.hostname, parts.port


def _request_head(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _status_and_length(head: bytes) -> tuple[int, int]:
    """(status, Content-Length) of a response head (the status line and the headers).

    Raises:
        UnsupportedResponse: no ``Content-Length``.
        ValueError: not an HTTP/1.1 status line.
    """
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return status, int(value)
    raise UnsupportedResponse(f"HTTP {status} without Content-Length")


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
        status, length = _status_and_length(bytes(head).rstrip(b"\r\n"))
        return status, self._reader.read(length)

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


class AsyncKeepAlivePool:
    """Keep-alive connections to ``base_url`` on asyncio streams, opened as requests need
    them and reused: as many as requests were ever in flight at once.

    Args:
        base_url: ``http://host:port`` of the service.
        headers: sent with every request (e.g. ``content-type``, ``authorization``).
        timeout_s: longest wait for one answer, seconds.
    """

    def __init__(
        self, base_url: str, headers: dict[str, str] | None = None, timeout_s: float = 30.0
    ) -> None:
        self._hostname, self._port = _host_port(base_url)
        self._host = f"{self._hostname}:{self._port}"
        self._headers = dict(headers or {})
        self.timeout_s = timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` to ``path``: (status code, body). A connection that failed is closed,
        not reused; one the server closed while idle (its keep-alive timeout) is replaced by
        a new one and the request sent again, as httpx does.

        Raises:
            OSError, asyncio.IncompleteReadError, TimeoutError, ValueError,
            UnsupportedResponse: the request failed.
        """
        request = _request_head("POST", path, self._host, self._headers, body) + body
        while self._idle:
            reader, writer = self._idle.pop()
            if not reader.at_eof():
                try:
                    return await self._exchange(reader, writer, request)
                except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                    if getattr(exc, "partial", b""):  # closed mid-answer: a real failure
                        raise
            writer.close()  # closed by the server while idle
        reader, writer = await asyncio.open_connection(self._hostname, self._port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await self._exchange(reader, writer, request)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes]:
        """Send ``request`` and read its answer; the connection goes back to the idle ones,
        or is closed if anything failed."""
        try:
            async with asyncio.timeout(self.timeout_s):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status, length = _status_and_length(head[:-4])
                answer = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer))
        return status, answer

    async def aclose(self) -> None:
        """Close every idle connection."""
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
