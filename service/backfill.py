"""`solar backfill --model PATH`: build a model version's user states from the durable history
before any replica serves it (docs/DESIGN.md §3, "Rollouts"; docs/OPERATIONS.md, "Deploying
a new model").

Run with the environment of ``solar serve`` / ``solar worker`` (it needs the shared Redis and
the PostgreSQL history). In order:

1. The version is registered (``service.store.models``): from then on every running applier
   also applies PATH's version (within a lease round, no restart), so events arriving during
   the backfill are not missed. A fresh backfill waits one lease (``SOLAR_APPLY_LEASE_S``)
   before building anything, for the appliers to follow.
2. The users of the durable history are listed page by page into the version's work queue
   (``service.stream.backfill``: a Redis Stream and its consumer group; the listing cursor is
   stored with each page, so a killed backfill resumes where it stopped).
3. Consumers take items and cover each user with ``UserStates.apply_pending`` of PATH's model:
   the whole history in one batch for a user without a state, only the missing events for
   one the appliers already started, each commit fenced on the version's covered position.
   Paced to ``--max-events-per-s`` over all processes. ``--processes N`` starts N − 1 more
   consumer processes on this machine; ``--join`` runs one more consumer anywhere (another
   machine with the same environment) for a backfill already started.
4. A progress bar on a terminal (plain log lines otherwise) and, with ``--metrics-port``,
   ``solar_backfill_users_done``/``_total`` and ``solar_backfill_events_total`` for Grafana.

Exit 0 once every listed user is covered (the queue is empty); 1 on a failure (re-running the
same command resumes); 2 on a configuration error. A SIGKILL at any point loses nothing: an
item taken but not done is claimed again after ``--claim-idle-s``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from service.settings import Settings, settings_from_environment

if TYPE_CHECKING:  # imported where used: `solar backfill --help` loads no torch
    from service.core.users import UserStates
    from service.history.base import HistoryStore
    from service.metrics import Metrics
    from service.stream.backfill import BackfillQueue

__all__ = ["main"]

logger = logging.getLogger(__name__)

LIST_PAGE_USERS = 1_000
_REPORT_S = 0.5
_BLOCK_S = 0.2  # a blocking read, well within the store timeout
_LOG_EVERY_S = 5.0


@dataclass(frozen=True)
class BackfillOptions:
    """The command line of one backfill process."""

    model_path: Path
    processes: int
    max_events_per_s: float
    metrics_port: int | None
    claim_idle_s: float
    join: bool


def _consumer_name() -> str:
    return f"backfill-{socket.gethostname()}-{os.getpid()}"


async def _consume(
    queue: BackfillQueue,
    users: UserStates,
    rate_per_s: float,
    parent_pid: int | None,
    claim_idle_s: float,
) -> int:
    """Cover users item after item until the queue is complete; the events folded in.
    ``parent_pid``: stop when that process is gone (a ``--processes`` child)."""
    consumer = _consumer_name()
    started, folded = time.monotonic(), 0
    while True:
        if parent_pid is not None and os.getppid() != parent_pid:
            logger.warning("backfill consumer %s: its parent is gone, stopping", consumer)
            return folded
        item = await queue.take(consumer, claim_idle_s=claim_idle_s, block_s=_BLOCK_S)
        if item is None:
            if (await queue.progress()).complete:
                return folded
            continue
        events = 0
        for user_id in item.users:
            events += (await users.apply_pending(user_id)).events
            ahead_s = (folded + events) / rate_per_s - (time.monotonic() - started)
            if ahead_s > 0:
                await asyncio.sleep(ahead_s)
        await queue.done(item, events)
        folded += events


async def _list_users(queue: BackfillQueue, history: HistoryStore) -> None:
    """List every user of the durable history into the queue, from the stored cursor on."""
    progress = await queue.progress()
    cursor = progress.cursor
    while not progress.listed:
        page = await history.users(after=cursor, limit=LIST_PAGE_USERS)
        last = len(page) < LIST_PAGE_USERS
        await queue.list_page(page, last_page=last)
        if last:
            return
        cursor = page[-1]


class _Progress:
    """A tqdm bar on a terminal, a log line every few seconds otherwise; the gauges."""

    def __init__(self, version: str, metrics: Metrics) -> None:
        from tqdm import tqdm

        self.version = version
        self.metrics = metrics
        self._bar: tqdm[None] | None = None
        self._events = 0
        self._logged = 0.0
        if sys.stderr.isatty():
            self._bar = tqdm(total=0, unit="users", desc=f"backfill {version}")

    def show(self, total: int, done: int, events: int) -> None:
        self.metrics.backfill_users_total.labels(version=self.version).set(total)
        self.metrics.backfill_users_done.labels(version=self.version).set(done)
        self.metrics.backfill_events.labels(version=self.version).inc(max(0, events - self._events))
        self._events = max(self._events, events)
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.set_postfix(events=events, refresh=False)
            self._bar.refresh()
        elif time.monotonic() - self._logged >= _LOG_EVERY_S:
            self._logged = time.monotonic()
            logger.info("backfill %s: %d/%d users, %d events", self.version, done, total, events)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _spawn_consumers(options: BackfillOptions, count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` more consumer processes of this backfill (``--join``), pacing included."""
    args = [
        sys.executable,
        "-m",
        "service.cli",
        "backfill",
        "--model",
        str(options.model_path),
        "--join",
        "--max-events-per-s",
        str(options.max_events_per_s),
        "--processes",
        str(options.processes),
        "--claim-idle-s",
        str(options.claim_idle_s),
        "--parent-pid",
        str(os.getpid()),
    ]
    return [subprocess.Popen(args) for _ in range(count)]


async def run_backfill(settings: Settings, options: BackfillOptions, parent_pid: int | None) -> int:
    """One backfill process: the coordinator (lists, reports, starts the other consumers and
    consumes too) or, with ``--join``, a consumer only. The exit code."""
    import torch

    from service.backends import connect_shared_redis, open_backends
    from service.core.model_versions import register_model
    from service.core.serving_model import load_serving_model
    from service.core.users import UserStates
    from service.metrics import Metrics
    from service.store.redis_client import redact
    from service.stream.backfill import BackfillQueue

    torch.set_num_threads(settings.torch_threads)
    settings = settings.model_copy(update={"model_path": options.model_path})
    model = await asyncio.to_thread(load_serving_model, settings)
    metrics = Metrics()
    backends = await open_backends(
        settings, metrics.store_observer(), shares_redis="solar backfill"
    )
    assert settings.redis_url is not None
    client = await connect_shared_redis(settings)
    queue = BackfillQueue(client, redact(settings.redis_url), model.version)
    users = UserStates.create(settings, backends.store, model, metrics, history=backends.history)
    rate_per_s = options.max_events_per_s / options.processes
    children: list[subprocess.Popen[bytes]] = []
    try:
        await register_model(backends.models, settings, model)
        await queue.ensure_group()
        if options.join:
            await _consume(queue, users, rate_per_s, parent_pid, options.claim_idle_s)
            return 0
        if options.metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(options.metrics_port, addr=settings.host, registry=metrics.registry)
        before = await queue.progress()
        if before.total == 0 and not before.listed:
            logger.info(
                "backfill %s: registered; waiting %.1f s for the appliers to follow",
                model.version,
                settings.apply_lease_s,
            )
            await asyncio.sleep(settings.apply_lease_s)
        else:
            logger.info(
                "backfill %s: resuming (%d/%d users done)", model.version, before.done, before.total
            )
        started = time.monotonic()
        await _list_users(queue, backends.history)
        children = _spawn_consumers(options, options.processes - 1)
        consumer = asyncio.create_task(
            _consume(queue, users, rate_per_s, None, options.claim_idle_s)
        )
        progress = _Progress(model.version, metrics)
        try:
            while not consumer.done():
                now = await queue.progress()
                progress.show(now.total, now.done, now.events)
                await asyncio.wait({consumer}, timeout=_REPORT_S)
            await consumer
            for child in children:
                await asyncio.to_thread(child.wait)
            final = await queue.progress()
            progress.show(final.total, final.done, final.events)
        finally:
            progress.close()
        seconds = time.monotonic() - started
        events = final.events - before.events
        logger.info(
            "backfill %s complete: %d users, %d events in %.1f s (%.0f events/s, %.0f per process)",
            model.version,
            final.done,
            events,
            seconds,
            events / max(seconds, 1e-9),
            events / max(seconds, 1e-9) / options.processes,
        )
        return 0 if final.complete and all(c.returncode == 0 for c in children) else 1
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        await client.aclose()
        await backends.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, check the configuration, run the backfill; the exit code."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(
        prog="solar backfill",
        description="build a model version's user states from the durable history (needs "
        "Redis and PostgreSQL: the environment of solar serve / solar worker)",
    )
    parser.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    parser.add_argument(
        "--processes", type=int, default=1, help="consumer processes on this machine (1)"
    )
    parser.add_argument(
        "--max-events-per-s",
        type=float,
        default=None,
        help="events folded in per second over all processes (SOLAR_BACKFILL_MAX_EVENTS_PER_S)",
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here")
    parser.add_argument(
        "--claim-idle-s",
        type=float,
        default=30.0,
        help="an item taken and left this long (a killed consumer's) is taken over (30)",
    )
    parser.add_argument(
        "--join", action="store_true", help="only consume a backfill already started"
    )
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv) if argv is not None else None)
    settings = settings_from_environment()
    if settings is None:
        return 2
    if not settings.redis_url or not settings.history_url:
        logger.error("solar backfill needs SOLAR_REDIS_URL and SOLAR_HISTORY_URL (shared tiers)")
        return 2
    if args.processes < 1:
        logger.error("--processes must be ≥ 1")
        return 2
    options = BackfillOptions(
        model_path=args.model,
        processes=args.processes,
        max_events_per_s=args.max_events_per_s or settings.backfill_max_events_per_s,
        metrics_port=args.metrics_port,
        claim_idle_s=args.claim_idle_s,
        join=args.join,
    )
    from service.core.serving_model import ModelUnavailable, require_checkpoint
    from service.errors import StoreUnavailable, TooManyModelVersions

    try:
        require_checkpoint(options.model_path)
        return asyncio.run(run_backfill(settings, options, args.parent_pid))
    except (ModelUnavailable, StoreUnavailable, TooManyModelVersions) as exc:
        logger.error("%s", exc)
        return 1
