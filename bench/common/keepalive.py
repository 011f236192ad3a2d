"""A minimal blocking HTTP/1.1 client over one keep-alive connection, for sequential latency.

A sequential client's own time adds to every latency it measures, and on a 2-core machine it
also takes a core from the server. httpx's ``AsyncClient`` costs ~0.75 ms of Python per
request here: GET /healthz took 0.93–1.13 ms p50 through it against 0.15–0.18 ms through this
client (same serve, same run), and a 2,048-candidate /rank 1.5–2.5 ms more. This client
writes the request bytes built once before the clock starts and reads the status line, the
headers and a ``Content-Length`` body, nothing else: no chunked bodies, no redirects, no TLS,
127.0.0.1 only. Closed-loop and paced loads keep httpx (``bench.common.load``).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

__all__ = ["KeepAliveClient", "UnsupportedResponse"]


class UnsupportedResponse(RuntimeError):
    """The server answered with a body this client does not read (no Content-Length)."""


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
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        self._host = f"{parts.hostname}:{parts.port}"
        self._headers = dict(headers or {})
        self._sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = self._sock.makefile("rb")

    def prepare(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> bytes:
        """The request's bytes (request line, headers, body), to send with :meth:`send`."""
        lines = [f"{method} {path} HTTP/1.1", f"host: {self._host}"]
        lines += [f"{name}: {value}" for name, value in self._headers.items()]
        if content_type is not None:
            lines.append(f"content-type: {content_type}")
        if body is not None:
            lines.append(f"content-length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")

    def send(self, request: bytes) -> tuple[int, bytes]:
        """Send prepared bytes and read the whole answer: (status code, body).

        Raises:
            UnsupportedResponse: an answer without ``Content-Length``.
            OSError, ValueError: the connection failed or the answer is not HTTP/1.1.
        """
        self._sock.sendall(request)
        status = int(self._reader.readline().split(b" ", 2)[1])
        length: int | None = None
        while (line := self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise UnsupportedResponse(f"HTTP {status} without Content-Length")
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
