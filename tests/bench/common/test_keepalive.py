"""bench.common.keepalive against a tiny local HTTP/1.1 server: requests, keep-alive, refusals,
for the blocking client and the asyncio pool."""

from __future__ import annotations

import asyncio
from http.server import BaseHTTPRequestHandler

import pytest

from bench.common.keepalive import AsyncKeepAlivePool, KeepAliveClient, UnsupportedResponse
from tests.conftest import ServeHttp


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: set[int] = set()
    received: list[bytes] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, length: bool = True, close: bool = False) -> None:
        _Handler.connections.add(self.client_address[1])  # the client port: one per connection
        self.send_response(status)
        if length:
            self.send_header("Content-Length", str(len(body)))
        if close or not length:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/nolength":
            self._answer(200, b"x", length=False)
        else:
            self._answer(200 if self.path == "/ok" else 404, self.path.encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.received.append(body)
        if self.path == "/drop":  # read, then close without answering
            self.close_connection = True
            return
        if self.path == "/nolength":
            self._answer(200, b"x", length=False)
            return
        echo = f"{self.headers['content-type']} {self.headers['authorization']} ".encode()
        closes = self.path == "/last"  # answer with Connection: close, then close
        self._answer(201, echo + body, close=closes)
        self.close_connection = closes


@pytest.fixture
def base_url(serve_http: ServeHttp) -> str:
    return serve_http(_Handler)


def test_requests_share_one_connection_and_read_whole_bodies(base_url: str) -> None:
    _Handler.connections.clear()
    with KeepAliveClient(base_url, headers={"authorization": "Bearer t"}) as client:
        assert client.get("/ok") == (200, b"/ok")
        assert client.get("/missing") == (404, b"/missing")
        post = client.prepare("POST", "/rank", b'{"a": 1}', "application/json")
        assert client.send(post) == (201, b'application/json Bearer t {"a": 1}')
        assert client.send(post) == (201, b'application/json Bearer t {"a": 1}')
    assert len(_Handler.connections) == 1


def test_an_answer_without_content_length_is_refused(base_url: str) -> None:
    with KeepAliveClient(base_url) as client, pytest.raises(UnsupportedResponse):
        client.get("/nolength")


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        KeepAliveClient("https://127.0.0.1:1")


def test_the_pool_reuses_connections_and_opens_one_per_request_in_flight(base_url: str) -> None:
    _Handler.connections.clear()
    headers = {"content-type": "application/json", "authorization": "Bearer t"}

    async def run() -> list[tuple[int, bytes]]:
        pool = AsyncKeepAlivePool(base_url, headers=headers)
        try:
            first = [await pool.post("/rank", b'{"a": %d}' % i) for i in range(3)]
            together = await asyncio.gather(*(pool.post("/rank", b"[]") for _ in range(3)))
            return first + list(together)
        finally:
            await pool.aclose()

    answers = asyncio.run(run())
    assert answers[:3] == [(201, b'application/json Bearer t {"a": %d}' % i) for i in range(3)]
    assert answers[3:] == [(201, b"application/json Bearer t []")] * 3
    assert 1 < len(_Handler.connections) <= 3  # one at first, at most one per request in flight


def test_the_pool_drops_connections_idle_too_long_and_never_resends(base_url: str) -> None:
    """A connection idle past ``max_idle_s`` is not reused (the server may be closing it); a
    request whose connection the server closed without answering fails, sent once."""
    _Handler.connections.clear()
    _Handler.received.clear()

    async def run() -> None:
        pool = AsyncKeepAlivePool(base_url, headers={"content-type": "x"}, max_idle_s=0.0)
        try:
            assert [await pool.post("/rank", b"%d" % i) for i in range(3)] == [
                (201, b"x None %d" % i) for i in range(3)
            ]
            with pytest.raises(asyncio.IncompleteReadError):
                await pool.post("/drop", b"once")
        finally:
            await pool.aclose()

    asyncio.run(run())
    assert len(_Handler.connections) == 3  # one per request: none was idle for < 0 s
    assert _Handler.received == [b"0", b"1", b"2", b"once"]


def test_the_pool_replaces_a_connection_the_server_closed_while_idle(base_url: str) -> None:
    _Handler.connections.clear()

    async def run() -> list[tuple[int, bytes]]:
        pool = AsyncKeepAlivePool(base_url, headers={"content-type": "x"})
        try:
            closed = await pool.post("/last", b"1")  # the server closes it after answering
            await asyncio.sleep(0.05)
            return [closed, await pool.post("/rank", b"2"), await pool.post("/rank", b"3")]
        finally:
            await pool.aclose()

    assert asyncio.run(run()) == [(201, b"x None 1"), (201, b"x None 2"), (201, b"x None 3")]
    assert len(_Handler.connections) == 2


def test_the_pool_refuses_an_answer_without_content_length(base_url: str) -> None:
    async def run() -> None:
        pool = AsyncKeepAlivePool(base_url)
        try:
            await pool.post("/nolength", b"")
        finally:
            await pool.aclose()

    with pytest.raises(UnsupportedResponse):
        asyncio.run(run())
