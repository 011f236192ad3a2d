"""bench.common.keepalive against a tiny local HTTP/1.1 server: requests, keep-alive, refusals."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest

from bench.common.keepalive import KeepAliveClient, UnsupportedResponse
from tests.conftest import ServeHttp


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: set[int] = set()

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, length: bool = True) -> None:
        _Handler.connections.add(id(self.connection))
        self.send_response(status)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
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
        echo = f"{self.headers['content-type']} {self.headers['authorization']} ".encode()
        self._answer(201, echo + body)


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
