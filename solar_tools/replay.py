"""`solar replay`: stream events into a running service's ``POST /ingest``, in batches.

A pure HTTP client (httpx): it never touches the store or the model, so it seeds any solar
deployment the same way. Two sources:

- ``--dataset NAME --data-dir DIR``: a dataset's interactions through ``model.datasets``
  (MovieLens...), in time order;
- ``--synthetic``: ``--users`` users with ``--events`` events each, items drawn from the
  served model's vocabulary (``GET /model``, or ``--items K`` for ids 1..K) with a few
  interest clusters per user, so histories look like low-rank behaviour. One user's events go
  out in consecutive batches, which the service applies as one factor update each.

Batches are sent by ``--concurrency`` workers; 503 answers are retried after their
``Retry-After`` (bounded), anything else that is not 200 stops the replay with exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

__all__ = ["ReplayError", "ReplayResult", "main", "replay", "synthetic_events"]

logger = logging.getLogger(__name__)

Event = dict[str, Any]
MAX_RETRIES = 8
_DEFAULT_ITEMS = 1682  # MovieLens-100K, the default model, when /model gives no vocabulary


class ReplayError(RuntimeError):
    """The service refused a batch, or could not be reached in time."""


@dataclass(frozen=True)
class ReplayResult:
    """Totals of one replay: events the service accepted or found duplicate, batches sent."""

    accepted: int
    duplicates: int
    batches: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return (self.accepted + self.duplicates) / self.seconds if self.seconds > 0 else 0.0


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


def dataset_events(name: str, data_dir: str, limit: int | None = None) -> Iterator[Event]:
    """A dataset's events in time order, through ``model.datasets`` (imported lazily)."""
    import numpy as np

    from model.datasets import load_dataset

    log = load_dataset(name, data_dir)
    user_of_event = np.repeat(np.arange(log.n_users), log.lengths)  # (E,)
    order = np.argsort(log.ts, kind="stable")  # (E,) a stream replays in time order
    if limit is not None:
        order = order[:limit]
    items, actions = log.vocab.items, log.vocab.actions
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


def batched(events: Iterable[Event], size: int) -> Iterator[list[Event]]:
    """Consecutive lists of at most ``size`` events."""
    batch: list[Event] = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def wait_ready(client: httpx.AsyncClient, timeout_s: float) -> None:
    """Poll ``GET /readyz`` until it answers 200, or raise :class:`ReplayError`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no answer"
    while loop.time() < deadline:
        try:
            response = await client.get("/readyz")
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            last = repr(exc)
        await asyncio.sleep(0.2)
    raise ReplayError(f"{client.base_url} not ready after {timeout_s} s ({last})")


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


async def vocabulary(client: httpx.AsyncClient, fallback: int | None) -> list[int | str]:
    """Item ids of the served model: ids 1..``fallback``, else ``GET /model``'s ``items``
    list, else ids 1..``n_items``-1 (``n_items`` counts the OOV row)."""
    if fallback is not None:
        return list(range(1, fallback + 1))
    info: dict[str, Any] = {}
    try:
        response = await client.get("/model")
        if response.status_code == 200:
            info = response.json()
    except (httpx.TransportError, ValueError) as exc:
        logger.warning("GET /model failed (%s); using ids 1..%d", exc, _DEFAULT_ITEMS)
    if isinstance(info.get("items"), list) and info["items"]:
        return [_item_id(i) for i in info["items"]]
    if isinstance(info.get("n_items"), int):  # table rows: the vocabulary + the OOV row
        return list(range(1, int(info["n_items"])))
    return list(range(1, _DEFAULT_ITEMS + 1))


async def _send(client: httpx.AsyncClient, batch: list[Event]) -> dict[str, Any]:
    for attempt in range(MAX_RETRIES + 1):
        response = await client.post("/ingest", json={"events": batch})
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        if response.status_code == 503 and attempt < MAX_RETRIES:
            await asyncio.sleep(min(float(response.headers.get("Retry-After", 1)), 5.0))
            continue
        hint = " (try a smaller --batch-size)" if response.status_code == 413 else ""
        raise ReplayError(f"POST /ingest: HTTP {response.status_code}{hint}: {response.text[:300]}")
    raise AssertionError("unreachable")  # the loop returns or raises


async def replay(
    client: httpx.AsyncClient,
    events: Iterable[Event],
    *,
    batch_size: int = 1000,
    concurrency: int = 2,
    progress: tqdm[Any] | None = None,
) -> ReplayResult:
    """Send ``events`` to ``POST /ingest`` in batches by ``concurrency`` workers."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    batches = iter(batched(events, batch_size))
    totals = {"accepted": 0, "duplicates": 0, "batches": 0}

    async def worker() -> None:
        for batch in batches:  # one shared iterator: each batch goes to exactly one worker
            answer = await _send(client, batch)
            totals["accepted"] += int(answer.get("accepted", 0))
            totals["duplicates"] += int(answer.get("duplicates", 0))
            totals["batches"] += 1
            if progress is not None:
                progress.update(len(batch))

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return ReplayResult(seconds=loop.time() - started, **totals)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="solar replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="dataset name known to model.datasets (ml-100k, ...)")
    source.add_argument("--synthetic", action="store_true", help="generated long histories")
    p.add_argument("--data-dir", default="data", help="where the datasets were extracted")
    p.add_argument("--limit", type=int, help="stop after this many dataset events")
    p.add_argument("--users", type=int, default=20, help="synthetic users")
    p.add_argument("--events", type=int, default=10_000, help="events per synthetic user")
    p.add_argument("--items", type=int, help="synthetic item ids 1..K instead of GET /model")
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


async def _run(args: argparse.Namespace) -> ReplayResult:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, timeout=args.timeout
    ) as client:
        await wait_ready(client, args.wait_ready)
        events: Iterable[Event]
        total: int | None
        if args.synthetic:
            if args.model_dir:
                items = checkpoint_items(args.model_dir)
            else:
                items = await vocabulary(client, args.items)
            events = synthetic_events(
                args.users, args.events, items, user_prefix=args.user_prefix, seed=args.seed
            )
            total = args.users * args.events
        else:
            events, total = dataset_events(args.dataset, args.data_dir, args.limit), args.limit
        with tqdm(total=total, unit="ev", disable=args.no_progress, smoothing=0.1) as bar:
            return await replay(
                client, events, batch_size=args.batch_size, concurrency=args.concurrency,
                progress=bar,
            )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``solar replay``; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per batch
    if args.batch_size < 1 or args.concurrency < 1:
        _parser().error("--batch-size and --concurrency must be ≥ 1")
    try:
        result = asyncio.run(_run(args))
    except (ReplayError, httpx.HTTPError) as exc:
        logger.error("replay failed: %s", exc)
        return 1
    logger.info(
        "replayed %d events (%d accepted, %d duplicates) in %d batches, %.1f s, %.0f events/s",
        result.accepted + result.duplicates, result.accepted, result.duplicates,
        result.batches, result.seconds, result.events_per_s,
    )  # fmt: skip
    return 0
