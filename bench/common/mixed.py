"""The mixed load of docs/DESIGN.md §10 for the benchmarks: /rank and /ingest over Zipf users, with
**Poisson arrivals** (open loop) or back to back (closed loop, for saturation).

Open loop: request i starts at t0 + (the sum of i exponential gaps of mean 1/rate), whatever
happened to the earlier ones (at most ``concurrency`` in flight), and its latency counts
from that scheduled start, so a server that falls behind is charged for it; a /rank or an
/ingest is drawn per arrival. Bodies are assembled from pre-encoded pieces (candidate lists,
user ids) and sent over a pool of lean keep-alive connections
(``bench.common.keepalive.AsyncKeepAlivePool``), so the generator's CPU stays small on the
shared cores; the CPU it used is reported (``MixedResult.generator_cpu_s``). 127.0.0.1 only,
bounded in time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bench.common.keepalive import REQUEST_ERRORS, AsyncKeepAlivePool
from bench.common.load import headers, percentile

__all__ = ["MixedLoad", "MixedResult", "measure_mixed"]

_CANDIDATE_POOL = 32


@dataclass(frozen=True)
class MixedLoad:
    """The mix: the rank share of requests, candidates per /rank (``unknown`` of them ids
    outside the vocabulary), top k, events per /ingest (1…max_events), Zipf exponent over
    ``users``."""

    users: Sequence[str]
    items: Sequence[str]
    rank_share: float = 0.7
    candidates: int = 2_048
    unknown: int = 8
    top_k: int = 50
    max_events: int = 20
    zipf_s: float = 1.1
    actions: Sequence[str] = ()


@dataclass
class MixedResult:
    """Latencies (seconds) of the successful requests of one run, by route."""

    offered_rate: float | None
    seconds: float = 0.0
    rank_s: list[float] = field(default_factory=list)
    ingest_s: list[float] = field(default_factory=list)
    failures: int = 0
    unsent: int = 0  # open loop: arrivals not sent because ``concurrency`` were in flight
    generator_cpu_s: float = 0.0  # CPU the load generator's process used during the run

    def rank_ms(self, q: float) -> float:
        return 1_000.0 * percentile(self.rank_s, q)

    def ingest_ms(self, q: float) -> float:
        return 1_000.0 * percentile(self.ingest_s, q)

    @property
    def requests_per_s(self) -> float:
        done = len(self.rank_s) + len(self.ingest_s)
        return done / self.seconds if self.seconds > 0 else math.nan

    @property
    def rank_per_s(self) -> float:
        return len(self.rank_s) / self.seconds if self.seconds > 0 else math.nan


class _Bodies:
    """Request bodies of the mix, drawn per arrival."""

    def __init__(self, load: MixedLoad, rng: random.Random) -> None:
        self.load, self.rng = load, rng
        weights = [1.0 / (k + 1) ** load.zipf_s for k in range(len(load.users))]
        self._cum = list(itertools.accumulate(weights))
        known = load.candidates - load.unknown
        self._pool = []
        for i in range(_CANDIDATE_POOL):
            ids = (
                rng.sample(list(load.items), known)
                if known <= len(load.items)
                else (rng.choices(list(load.items), k=known))
            )
            ids += [f"unknown-{i}-{j}" for j in range(load.unknown)]
            rng.shuffle(ids)
            self._pool.append(json.dumps(ids))

    def user(self) -> str:
        return self.rng.choices(self.load.users, cum_weights=self._cum)[0]

    def rank(self) -> str:
        cands = self.rng.choice(self._pool)
        return (
            f'{{"user_id":{json.dumps(self.user())},"candidates":{cands},'
            f'"top_k":{self.load.top_k}}}'
        )

    def ingest(self) -> str:
        now = time.time()
        events = []
        for _ in range(self.rng.randint(1, self.load.max_events)):
            event: dict[str, object] = {
                "user_id": self.user(),
                "ts": now,
                "item_id": self.rng.choice(self.load.items),
            }
            if self.load.actions:
                event["action"] = self.rng.choice(list(self.load.actions))
            events.append(event)
        return json.dumps({"events": events})


def measure_mixed(
    base_url: str,
    load: MixedLoad,
    *,
    rate: float | None,
    seconds: float,
    concurrency: int = 64,
    seed: int = 0,
) -> MixedResult:
    """Run the mix for ``seconds``: Poisson arrivals at ``rate`` requests/s (open loop), or
    ``concurrency`` clients back to back (``rate`` None: saturation)."""
    return asyncio.run(_run(base_url, load, rate, seconds, concurrency, random.Random(seed)))


async def _run(
    base_url: str,
    load: MixedLoad,
    rate: float | None,
    seconds: float,
    concurrency: int,
    rng: random.Random,
) -> MixedResult:
    bodies = _Bodies(load, rng)
    result = MixedResult(offered_rate=rate)
    client = AsyncKeepAlivePool(base_url, headers=headers(None))

    async def one(started: float) -> None:
        is_rank = rng.random() < load.rank_share
        path, body = ("/rank", bodies.rank()) if is_rank else ("/ingest", bodies.ingest())
        # Every request error is a counted failure: in the open loop, one left to escape a
        # request's task would be lost.
        try:
            ok = (await client.post(path, body.encode()))[0] == 200
        except REQUEST_ERRORS:
            ok = False
        if ok:
            (result.rank_s if is_rank else result.ingest_s).append(time.perf_counter() - started)
        else:
            result.failures += 1

    try:
        for _ in range(3):  # the first requests of a connection off the clock
            await client.post("/rank", bodies.rank().encode())
        start, cpu = time.perf_counter(), time.process_time()
        deadline = start + seconds
        if rate is None:

            async def client_loop() -> None:
                while time.perf_counter() < deadline:
                    await one(time.perf_counter())

            await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        else:
            result.unsent = await _poisson(one, rate, deadline, concurrency, rng)
        result.seconds = time.perf_counter() - start
        result.generator_cpu_s = time.process_time() - cpu
    finally:
        await client.aclose()
    return result


async def _poisson(
    one: Callable[[float], Awaitable[None]],
    rate: float,
    deadline: float,
    concurrency: int,
    rng: random.Random,
) -> int:
    """Start ``one(scheduled)`` at Poisson arrival times until ``deadline``; returns how many
    arrivals found ``concurrency`` requests in flight and were dropped."""
    in_flight = 0
    unsent = 0
    tasks: set[asyncio.Task[None]] = set()
    scheduled = time.perf_counter()
    while True:
        scheduled += rng.expovariate(rate)
        if scheduled >= deadline:
            break
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        if in_flight >= concurrency:
            unsent += 1
            continue
        in_flight += 1

        async def run(at: float = scheduled) -> None:
            nonlocal in_flight
            try:
                await one(at)
            finally:
                in_flight -= 1

        task = asyncio.create_task(run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return unsent
