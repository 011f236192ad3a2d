"""Reusable pieces of the HTTP benchmarks: a private Redis, a `solar serve` process, seeding
users through /ingest, and measuring /rank with concurrent clients.

Everything runs on 127.0.0.1 with bounded requests and time. The functions are synchronous
(they run their own event loop) so scripts stay simple::

    with harness.redis_server() as redis_url, harness.service(model, redis_url) as base:
        items = harness.vocabulary(model)
        seeded = harness.seed_users(base, ["u0", "u1"], 10_000, items)
        result = harness.measure_rank(base, ["u0", "u1"], items, mode="svd", rate=100)
        print(seeded.events_per_s, result.p99_ms, result.requests_per_s)
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common.load import (
    RankResult,
    measure_healthz,
    measure_rank,
    measure_sequential,
    percentile,
)
from solar_tools.client import AsyncSolarClient, SolarClient, SolarUnavailable
from solar_tools.postgres_server import PostgresServer
from solar_tools.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]

__all__ = [
    "RankResult",
    "SeedResult",
    "actions",
    "measure_healthz",
    "measure_rank",
    "measure_sequential",
    "percentile",
    "random_checkpoint",
    "redis_server",
    "seed_users",
    "service",
    "trained_mode",
    "user_events",
    "vocabulary",
    "worker",
]

logger = logging.getLogger("bench.common.harness")
# httpx logs every request at INFO: thousands of lines, and client CPU taken from the run.
logging.getLogger("httpx").setLevel(logging.WARNING)

LOOPBACK = "127.0.0.1"


# ------------------------------------------------------------------------------- processes
@contextmanager
def redis_server() -> Iterator[str]:
    """A private ``redis-server`` on a free loopback port (no persistence); yields its URL."""
    with tempfile.TemporaryDirectory(prefix="solar-bench-redis-") as workdir:
        server = RedisServer(Path(workdir))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


@contextmanager
def postgres_history() -> Iterator[str]:
    """A private PostgreSQL (``solar_tools.postgres_server``, fsync on) for the durable history
    of processes that share one Redis (serve + worker); yields its ``SOLAR_HISTORY_URL``."""
    server = PostgresServer(fsync=True)
    server.start()
    try:
        yield server.url()
    finally:
        server.destroy()


@contextmanager
def service(
    model_dir: str | Path,
    redis_url: str | None,
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
    startup_timeout_s: float = 120.0,
    tree: Path = REPO,
) -> Iterator[str]:
    """`python -m service.cli serve` on 127.0.0.1:<free port>; yields the base URL.

    ``env`` adds ``SOLAR_*`` variables (e.g. ``SOLAR_MAX_BATCH``). Access logs are off
    (``--log-level warning``): they would cost the server CPU on every request. ``tree``: the
    source tree to serve (another revision's, for a same-run comparison; same environment).
    """
    port = free_port() if port is None else port
    variables = {
        **os.environ,
        "SOLAR_MODEL_PATH": str(model_dir),
        "SOLAR_REDIS_URL": redis_url or "",
        "PYTHONPATH": str(tree),
        **(env or {}),
    }
    base_url = f"http://{LOOPBACK}:{port}"
    with tempfile.TemporaryDirectory(prefix="solar-bench-serve-") as workdir:
        log_path = Path(workdir) / "serve.log"
        with log_path.open("wb") as log:
            command = [
                sys.executable,
                "-m",
                "service.cli",
                "serve",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ]
            proc = subprocess.Popen(command, cwd=tree, env=variables, stdout=log, stderr=log)
            try:
                _wait_ready(base_url, proc, log_path, startup_timeout_s)
                yield base_url
            finally:
                _stop(proc)


@contextmanager
def worker(
    model_dir: str | Path,
    redis_url: str,
    *,
    env: dict[str, str] | None = None,
    metrics_port: int | None = None,
    startup_timeout_s: float = 120.0,
    tree: Path = REPO,
) -> Iterator[str]:
    """`python -m service.cli worker` (the external applier) of ``tree``; yields its /metrics
    URL (a free port unless ``metrics_port``) once it owns partitions (its
    ``solar_ingest_pending`` gauge appears), so its start-up is not charged to a measurement."""
    port = free_port() if metrics_port is None else metrics_port
    variables = {
        **os.environ,
        "SOLAR_MODEL_PATH": str(model_dir),
        "SOLAR_REDIS_URL": redis_url,
        "SOLAR_WORKER_METRICS_PORT": str(port),
        "PYTHONPATH": str(tree),
        **(env or {}),
    }
    with tempfile.TemporaryDirectory(prefix="solar-bench-worker-") as workdir:
        log_path = Path(workdir) / "worker.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "worker"],
                cwd=tree,
                env=variables,
                stdout=log,
                stderr=log,
            )
            url = f"http://{LOOPBACK}:{port}/metrics"
            try:
                _wait_worker(url, proc, log_path, startup_timeout_s)
                yield url
            finally:
                _stop(proc)


def _wait_worker(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"solar worker exited ({proc.returncode}):\n{log_path.read_text()}")
        try:
            if "solar_ingest_pending{" in httpx.get(url, timeout=2.0).text:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"solar worker not ready in {timeout_s} s:\n{log_path.read_text()}")


def _wait_ready(
    base_url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    with SolarClient(base_url, timeout_s=2.0) as solar:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"solar serve exited ({proc.returncode}):\n{log_path.read_text()}"
                )
            try:
                solar.wait_ready(timeout_s=min(1.0, max(0.1, deadline - time.monotonic())))
                return
            except SolarUnavailable:
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"solar serve not ready in {timeout_s} s:\n{log_path.read_text()}"
                    ) from None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------- model
def _checkpoint_document(model_dir: str | Path) -> dict[str, Any]:
    """A checkpoint's ``config.json``: vocabulary, actions, ranker configuration."""
    document: dict[str, Any] = json.loads((Path(model_dir) / "config.json").read_text())
    return document


def vocabulary(model_dir: str | Path) -> list[str]:
    """Item ids of a checkpoint's vocabulary (``config.json``), as strings."""
    return [str(item) for item in _checkpoint_document(model_dir)["items"]]


def actions(model_dir: str | Path) -> list[str]:
    return [str(action) for action in _checkpoint_document(model_dir).get("actions", [])]


def trained_mode(model_dir: str | Path) -> str:
    """The mode a checkpoint was trained in: what /rank scores without a mode."""
    return str(_checkpoint_document(model_dir)["config"].get("mode", "svd"))


def random_checkpoint(directory: str | Path, n_items: int = 1_682, seed: int = 0) -> Path:
    """A random (untrained) `svd` model of the default shapes: d=64, 4 heads, r=32,
    ``n_items`` items (the default model itself is a `lifelong` one since issue 21)."""
    import torch

    from model.checkpoint import save_checkpoint
    from model.config import RankerConfig
    from model.ranker import Ranker
    from model.vocabulary import Vocabulary

    torch.manual_seed(seed)
    items = tuple(str(i) for i in range(1, n_items + 1))
    config = RankerConfig(n_items=n_items + 1, n_actions=3, dim=64, heads=4, rank=32)
    ranker = Ranker(config)
    with torch.no_grad():
        ranker.action_emb.weight.normal_(0.0, 0.05)
    save_checkpoint(directory, ranker, Vocabulary(items, ("click", "like")), {"random": True})
    return Path(directory)


# ------------------------------------------------------------------------------- seeding
@dataclass(frozen=True)
class SeedResult:
    events: int
    seconds: float
    accepted: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan


def user_events(
    user_id: str, n_events: int, items: Sequence[str], seed: int = 0, kinds: Sequence[str] = ()
) -> list[dict[str, object]]:
    """``n_events`` events of one user: a few favourite regions of the vocabulary plus noise,
    increasing timestamps, an action on a third of them, unique event ids."""
    rng = random.Random(f"{seed}:{user_id}")
    centres = [rng.randrange(len(items)) for _ in range(5)]
    width = max(1, len(items) // 40)
    t0 = 1_700_000_000.0
    events: list[dict[str, object]] = []
    for j in range(n_events):
        if rng.random() < 0.8:
            k = (rng.choice(centres) + rng.randrange(width)) % len(items)
        else:
            k = rng.randrange(len(items))
        e: dict[str, object] = {
            "user_id": user_id,
            "item_id": items[k],
            "ts": t0 + 30.0 * j,
            "event_id": f"{user_id}-{j}",
        }
        if kinds and rng.random() < 0.33:
            e["action"] = rng.choice(list(kinds))
        events.append(e)
    return events


def seed_users(
    base_url: str,
    users: Sequence[str],
    n_events: int,
    items: Sequence[str],
    *,
    batch: int = 1_000,
    concurrency: int = 4,
    seed: int = 0,
    kinds: Sequence[str] = (),
    token: str | None = None,
) -> SeedResult:
    """POST ``n_events`` events per user to /ingest (``solar_tools.client``) in bodies of
    ``batch`` events, with up to ``concurrency`` bodies in flight; each body holds one user's
    events and a user's bodies go in order, so concurrent bodies rarely share a user. Times
    the whole (the events are generated before the clock starts)."""
    bodies = []
    for user in users:
        events = user_events(user, n_events, items, seed, kinds)
        bodies += [events[i : i + batch] for i in range(0, n_events, batch)]
    start = time.perf_counter()
    accepted = asyncio.run(_post_all(base_url, bodies, concurrency, token))
    return SeedResult(
        events=n_events * len(users), seconds=time.perf_counter() - start, accepted=accepted
    )


async def _post_all(
    base_url: str, bodies: list[list[dict[str, object]]], concurrency: int, token: str | None
) -> int:
    queue = list(reversed(bodies))
    accepted = 0
    async with AsyncSolarClient(base_url, token=token, timeout_s=120.0) as solar:

        async def worker() -> None:
            nonlocal accepted
            while queue:
                answer = await solar.ingest(queue.pop())  # awaited before `accepted` is read
                accepted += answer.accepted

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return accepted
