"""Real `solar serve`, `solar worker` and `solar backfill` child processes, for fault tests
and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from solar_tools.redis_server import free_port

__all__ = ["Backfill", "Process", "ProcessError", "Serve", "Worker"]

STARTUP_TIMEOUT_S = 60.0


class ProcessError(RuntimeError):
    """A child process exited early or did not get ready in time (its log tail attached)."""


def _fail(message: str) -> None:
    raise ProcessError(message)


class Process:
    """One `python -m service.cli <command>` child with its log file."""

    def __init__(self, command: str, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", command, *args],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_for_log(self, text: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None:
                _fail(f"process exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                _fail(f"{text!r} not logged in {timeout_s} s:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: a crash, no clean-up of any kind."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


class Serve(Process):
    """`solar serve` on a free loopback port; ``base`` is its URL."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        super().__init__("serve", env, log, "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                _fail(f"solar serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                _fail(f"solar serve not ready:\n{self.tail()}")
            time.sleep(0.1)


class Worker(Process):
    """`solar worker`, started and ready (it logged its start), /metrics on ``metrics_port``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.metrics_port = free_port()
        env = {**env, "SOLAR_WORKER_METRICS_PORT": str(self.metrics_port)}
        super().__init__("worker", env, log)
        self.wait_for_log("solar worker")

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


class Backfill(Process):
    """`solar backfill --model PATH [args]`, started (not awaited: :meth:`wait`)."""

    def __init__(self, env: dict[str, str], log: Path, model: Path, *args: str) -> None:
        super().__init__("backfill", env, log, "--model", str(model), *args)

    def wait(self, timeout_s: float) -> int:
        """Its exit code once it exited (ProcessError if it runs past ``timeout_s``)."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            _fail(f"solar backfill still running after {timeout_s} s:\n{self.tail()}")
            raise
