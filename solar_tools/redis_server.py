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
from collections.abc import Sequence
from pathlib import Path

import redis

__all__ = ["RedisClusterServers", "RedisServer", "RedisServerError", "free_port"]

logger = logging.getLogger(__name__)

REDIS_SERVER_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
_DEFAULT_REDIS_PORT = 6379  # never used: it may belong to a real Redis


class RedisServerError(RuntimeError):
    """redis-server is missing, exited early or did not answer PING in time."""


def free_port(max_port: int = 65_535) -> int:
    """A loopback TCP port ≤ ``max_port`` that nothing listens on right now (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != _DEFAULT_REDIS_PORT and port <= max_port:
            return port


class RedisServer:
    """One redis-server child process on ``127.0.0.1:port`` with its files under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        start_timeout_s: float = 10.0,
        extra_args: Sequence[str] = (),
    ):
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
        self.extra_args = tuple(extra_args)  # e.g. ("--appendonly", "yes") or cluster mode
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
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
            *self.extra_args,
        ]
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

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown save); a no-op when stopped."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
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


REDIS_CLI_BIN = shutil.which("redis-cli") or "/usr/bin/redis-cli"


class RedisClusterServers:
    """A real Redis Cluster of ``masters`` redis-server processes (no replicas) on free
    loopback ports, created with ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path, masters: int = 3, start_timeout_s: float = 20.0) -> None:
        self.start_timeout_s = start_timeout_s
        self.nodes = []
        for i in range(masters):
            node_dir = workdir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            args = (
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            )
            # The cluster bus listens on port + 10,000.
            port = free_port(max_port=55_535)
            self.nodes.append(RedisServer(node_dir, port=port, extra_args=args))

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:<port of the first node>`` (the others are discovered)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [REDIS_CLI_BIN, "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=self.start_timeout_s,
        )
        self._wait_ok()
        logger.info("redis cluster ready at %s", ", ".join(addresses))

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        for node in self.nodes:
            client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1.0)
            try:
                while client.cluster("INFO").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise RedisServerError("redis cluster did not reach cluster_state:ok")
                    time.sleep(0.05)
            finally:
                client.close()

    def flush(self) -> None:
        """FLUSHALL on every master."""
        for node in self.nodes:
            node.flush()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
