"""`solar replay`: stream events into a running service's ``POST /ingest``, in batches.

A pure HTTP client (``solar_tools.client``): it never touches the store or the model, so it
seeds any solar deployment the same way. Two sources:

- ``--dataset NAME|FILE``: a dataset's interactions through ``model.datasets`` (MovieLens
  under ``--data-dir``, or any CSV / TSV / Parquet log; ``--columns`` names its columns), in
  time order;
- ``--synthetic``: ``--users`` users with ``--events`` events each, items drawn from the
  served model's vocabulary (``GET /model/items``, or ``--items K`` for ids 1..K) with a few
  interest clusters per user, so histories look like low-rank behaviour. One user's events go
  out in consecutive batches, which the service applies as one factor update each.

Batches are streamed as NDJSON by ``--concurrency`` workers, with a progress bar; 503 answers
are retried after their ``Retry-After`` (bounded), anything else that is not 200 stops the
replay with exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from solar_tools.client import AsyncSolarClient, BulkIngestResult, Retry, SolarError
from solar_tools.results import SolarHTTPError

__all__ = ["ReplayError", "main", "replay", "synthetic_events"]

logger = logging.getLogger(__name__)

Event = dict[str, Any]
RETRY = Retry(attempts=9, max_wait_s=5.0)  # a busy service: 8 retries, ≤ 5 s apart


class ReplayError(RuntimeError):
    """The service refused a batch, or could not be reached in time."""


def synthetic_events(
    users: int,
    events_per_user: int,
    item_ids: Sequence[int | str],
    *,
    user_prefix: str = "u",
    clusters: int = 4,
    start_ts: float = 1.7e9,
    seed: int = 0,
) -> Iterator[Event]:
    """Events of ``users`` users, user by user, each user's ``ts`` strictly increasing.

    Each user favours ``clusters`` contiguous slices of the vocabulary (90% of events) and
    explores uniformly otherwise. ``event_id`` makes re-running the replay idempotent.
    """
    rng = random.Random(seed)
    n_items = len(item_ids)
    width = max(1, n_items // 50)
    for u in range(users):
        user_id = f"{user_prefix}{u}"
        centres = [rng.randrange(n_items) for _ in range(clusters)]
        ts = start_ts + rng.random() * 1e5
        for j in range(events_per_user):
            if rng.random() < 0.9:
                k = (rng.choice(centres) + rng.randrange(width)) % n_items
            else:
                k = rng.randrange(n_items)
            ts += 1.0 + rng.random() * 60.0
            yield {
                "user_id": user_id,
                "item_id": item_ids[k],
                "ts": round(ts, 3),
                "action": "view",
                "event_id": f"syn-{seed}-{u}-{j}",
            }


def dataset_events(
    name: str,
    data_dir: str,
    limit: int | None = None,
    *,
    columns: str | None = None,
    sort: bool = False,
) -> tuple[Iterator[Event], int]:
    """A dataset's events in time order, and how many there are (at most ``limit``).

    Loaded through ``model.datasets`` (imported here: it pulls torch) before anything is
    sent, so a bad file fails first. ``columns``: ``user=…,item=…,ts=…[,action=…]`` for a log
    file whose columns have other names.

    Raises:
        ReplayError: the dataset cannot be loaded (the message names file and column).
    """
    import numpy as np

    from model.datasets import DatasetError, load_dataset, parse_columns

    try:
        mapping = parse_columns(columns) if columns else None
        log = load_dataset(name, data_dir, sort=sort, columns=mapping)
    except DatasetError as exc:
        raise ReplayError(str(exc)) from exc
    user_of_event = np.repeat(np.arange(log.n_users), log.lengths)  # (E,)
    order = np.argsort(log.ts, kind="stable")  # (E,) a stream replays in time order
    if limit is not None:
        order = order[:limit]
    items, actions = log.vocab.items, log.vocab.actions

    def events() -> Iterator[Event]:
        for e in order.tolist():
            event: Event = {
                "user_id": log.users[int(user_of_event[e])],
                "item_id": items[int(log.items[e]) - 1],
                "ts": float(log.ts[e]),
            }
            action = int(log.actions[e])
            if action > 0:
                event["action"] = actions[action - 1]
            yield event

    return events(), int(order.size)


def _item_id(value: object) -> int | str:
    """A vocabulary id as sent in JSON: an int when that is the same id ("42" → 42), else the
    string ("007" stays "007": as 7 it would be another item)."""
    text = str(value)
    if text.isascii() and text.isdigit() and str(int(text)) == text:
        return int(text)
    return text


def checkpoint_items(model_dir: str) -> list[int | str]:
    """A checkpoint's item ids (``config.json`` ``items``), decimal strings as integers."""
    document = json.loads((Path(model_dir) / "config.json").read_text())
    return [_item_id(i) for i in document["items"]]


async def vocabulary(client: AsyncSolarClient, fallback: int | None) -> list[int | str]:
    """Item ids of the served model (``GET /model/items``), or ids 1..``fallback``."""
    if fallback is not None:
        return list(range(1, fallback + 1))
    return await client.vocabulary()


async def replay(
    client: AsyncSolarClient,
    events: Iterable[Event],
    *,
    batch_size: int = 1000,
    concurrency: int = 2,
    progress: bool | tqdm[Any] = False,
    total: int | None = None,
) -> BulkIngestResult:
    """Send ``events`` to ``POST /ingest`` in NDJSON batches by ``concurrency`` workers.

    Raises:
        ReplayError: the service refused a batch (a 413 adds a hint) or stayed unavailable.
    """
    try:
        return await client.ingest_many(
            events,
            batch_size=batch_size,
            concurrency=concurrency,
            progress=progress,
            total=total,
        )
    except SolarHTTPError as exc:
        hint = " (try a smaller --batch-size)" if exc.status == 413 else ""
        raise ReplayError(f"POST /ingest: {exc}{hint}") from exc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="solar replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="ml-100k, ml-1m or a CSV / TSV / Parquet log file")
    source.add_argument("--synthetic", action="store_true", help="generated long histories")
    p.add_argument("--data-dir", default="data", help="where the datasets were extracted")
    p.add_argument("--columns", help="a log file's columns: user=NAME,item=NAME,ts=NAME[,action=]")
    p.add_argument("--sort", action="store_true", help="sort a log file's events by time")
    p.add_argument("--limit", type=int, help="stop after this many dataset events")
    p.add_argument("--users", type=int, default=20, help="synthetic users")
    p.add_argument("--events", type=int, default=10_000, help="events per synthetic user")
    p.add_argument("--items", type=int, help="synthetic item ids 1..K instead of /model/items")
    p.add_argument("--model-dir", help="synthetic items from this checkpoint's config.json")
    p.add_argument("--user-prefix", default="u", help="synthetic user ids: <prefix><k>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1000, help="events per POST /ingest")
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    p.add_argument("--token", help="bearer token when the service sets SOLAR_API_TOKEN")
    p.add_argument("--wait-ready", type=float, default=30.0, help="seconds to wait for /readyz")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


async def _events(
    args: argparse.Namespace, client: AsyncSolarClient
) -> tuple[Iterable[Event], int | None]:
    """The events the arguments ask for, and their number when it is known in advance."""
    if not args.synthetic:
        return dataset_events(
            args.dataset, args.data_dir, args.limit, columns=args.columns, sort=args.sort
        )
    if args.model_dir:
        items = checkpoint_items(args.model_dir)
    else:
        items = await vocabulary(client, args.items)
    events = synthetic_events(
        args.users, args.events, items, user_prefix=args.user_prefix, seed=args.seed
    )
    return events, args.users * args.events


async def _run(args: argparse.Namespace) -> BulkIngestResult:
    async with AsyncSolarClient(
        args.url, token=args.token, timeout_s=args.timeout, retry=RETRY
    ) as client:
        await client.wait_ready(args.wait_ready)
        events, total = await _events(args, client)
        return await replay(
            client,
            events,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            progress=not args.no_progress,
            total=total,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``solar replay``; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per batch
    if args.batch_size < 1 or args.concurrency < 1:
        _parser().error("--batch-size and --concurrency must be ≥ 1")
    if args.columns and args.synthetic:
        _parser().error("--columns applies to --dataset FILE")
    try:
        result = asyncio.run(_run(args))
    except (ReplayError, SolarError) as exc:
        logger.error("replay failed: %s", exc)
        return 1
    logger.info(
        "replayed %d events (%d accepted, %d duplicates) in %d batches, %.1f s, %.0f events/s",
        result.events,
        result.accepted,
        result.duplicates,
        result.batches,
        result.seconds,
        result.events_per_s,
    )
    return 0
