"""A private ``redis-server`` process for tests: free loopback port, no persistence.

The server can be stopped, paused (SIGSTOP, to provoke timeouts) and started again on the
same port, so tests can check how the store behaves while Redis is away.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["RedisServer", "RedisServerError", "free_port"]

logger = logging.getLogger(__name__)

REDIS_SERVER_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
_DEFAULT_REDIS_PORT = 6379  # never used: it may belong to a real Redis


class RedisServerError(RuntimeError):
    """redis-server is missing, exited early or did not answer PING in time."""


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != _DEFAULT_REDIS_PORT:
            return port


class RedisServer:
    """One redis-server child process on ``127.0.0.1:port`` with its files under ``workdir``."""

    def __init__(self, workdir: Path, port: int | None = None, start_timeout_s: float = 10.0):
        if not Path(REDIS_SERVER_BIN).is_file():
            raise RedisServerError(
                f"redis-server not found (looked for {REDIS_SERVER_BIN}); install it, "
                "e.g. `apt-get install redis-server`: the store tests need a real Redis"
            )
        self.workdir = workdir
        self.port = free_port() if port is None else port
        if self.port == _DEFAULT_REDIS_PORT:
            raise RedisServerError("refusing port 6379: it may belong to a real Redis")
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def start(self) -> None:
        """Start the server (if not running) and wait until it answers PING."""
        if self.running:
            return
        args = [
            REDIS_SERVER_BIN,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready()
        logger.info("redis-server pid %d ready at %s", self._proc.pid, self.url)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            while True:
                if not self.running:
                    raise RedisServerError(f"redis-server exited early:\n{self._log_tail()}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisServerError(
                        f"redis-server did not answer PING within {self.start_timeout_s} s:\n"
                        f"{self._log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s); a no-op when stopped."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it keeps accepting TCP connections but never replies."""
        if self._proc is None:
            raise RedisServerError("redis-server is not running")
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo ``pause`` (SIGCONT)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        """FLUSHDB (db 0), starting the server first if a test left it stopped or paused."""
        self.resume()
        self.start()
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            client.flushdb()
        finally:
            client.close()
