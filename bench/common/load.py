"""/rank load generation for the benchmarks: closed loop (saturation) or open loop (a fixed
request rate), 127.0.0.1 only, bounded in requests and time. Used through ``bench.common.harness``.

Raw httpx with request bodies encoded before the clock starts, not ``solar_tools.client``:
the client's JSON encoding and answer decoding (2,048 candidates per request) would be
charged to the service's latency, and a load generator must not retry its 503s.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx

__all__ = ["RankResult", "headers", "measure_healthz", "measure_rank", "percentile"]

_CANDIDATE_POOL = 32  # distinct pre-encoded candidate lists cycled through by the clients

Send = Callable[[int, float], Awaitable[None]]


def headers(token: str | None) -> dict[str, str]:
    """JSON content type, plus the bearer token when the service requires one."""
    values = {"content-type": "application/json"}
    if token:
        values["authorization"] = f"Bearer {token}"
    return values


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class RankResult:
    """Latencies (seconds) of the successful /rank requests of one measurement, and the CPU
    seconds the server process and this client spent on them (contention-independent cost)."""

    mode: str
    latencies_s: list[float] = field(default_factory=list)
    failures: int = 0
    seconds: float = 0.0
    offered_rate: float | None = None
    server_cpu_s: float = math.nan
    client_cpu_s: float = math.nan
    unsent: int = 0  # open loop: scheduled but not sent (``concurrency`` already in flight)

    @property
    def cpu_ms_per_request(self) -> tuple[float, float]:
        """(server, client) CPU milliseconds per successful request."""
        n = max(1, len(self.latencies_s))
        return 1_000.0 * self.server_cpu_s / n, 1_000.0 * self.client_cpu_s / n

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies_s) / self.seconds if self.seconds > 0 else math.nan

    @property
    def p50_ms(self) -> float:
        return 1_000.0 * percentile(self.latencies_s, 50)

    @property
    def p99_ms(self) -> float:
        return 1_000.0 * percentile(self.latencies_s, 99)


def measure_rank(
    base_url: str,
    users: Sequence[str],
    items: Sequence[str],
    *,
    candidates: int = 2_048,
    top_k: int = 100,
    mode: str = "svd",
    concurrency: int = 8,
    max_requests: int | None = None,
    max_seconds: float = 10.0,
    rate: float | None = None,
    warmup_requests: int = 5,
    seed: int = 0,
    token: str | None = None,
) -> RankResult:
    """Send /rank requests for ``max_seconds`` (or ``max_requests``), return the latencies.

    Closed loop (``rate`` None): ``concurrency`` clients send back to back; the throughput is
    the saturation throughput. Open loop (``rate`` requests/s): requests start on a fixed
    schedule, at most ``concurrency`` in flight, and latency counts from the scheduled start
    (so a server that falls behind is charged for it).
    """
    rng = random.Random(seed)
    pool = list(items)

    def draw() -> list[str]:
        # A vocabulary smaller than M (ml-100k has 1,682 items) is sampled with replacement,
        # so that every request really carries M candidates.
        if candidates <= len(pool):
            return rng.sample(pool, candidates)
        return rng.choices(pool, k=candidates)

    bodies = [
        json.dumps(
            {
                "user_id": rng.choice(list(users)),
                "candidates": draw(),
                "top_k": top_k,
                "mode": mode,
            }
        )
        for _ in range(_CANDIDATE_POOL)
    ]
    limit = max_requests if max_requests is not None else 10**9
    return asyncio.run(
        _measure(
            base_url, bodies, mode, concurrency, limit, max_seconds, rate, warmup_requests, token
        )
    )


async def _measure(
    base_url: str,
    bodies: list[str],
    mode: str,
    concurrency: int,
    limit: int,
    max_seconds: float,
    rate: float | None,
    warmup: int,
    token: str | None,
) -> RankResult:
    result = RankResult(mode=mode, offered_rate=rate)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60.0, limits=limits, headers=headers(token)
    ) as client:
        for body in bodies[:warmup]:
            await client.post("/rank", content=body)

        async def one(i: int, started: float) -> None:
            try:
                response = await client.post("/rank", content=bodies[i % len(bodies)])
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                result.latencies_s.append(time.perf_counter() - started)
            else:
                result.failures += 1

        server_cpu = await server_cpu_s(client)
        client_cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + max_seconds
        if rate is None:
            await _closed_loop(one, concurrency, limit, deadline)
        else:
            result.unsent = await _open_loop(one, concurrency, limit, deadline, rate)
        result.seconds = time.perf_counter() - start
        result.client_cpu_s = time.process_time() - client_cpu
        result.server_cpu_s = await server_cpu_s(client) - server_cpu
    return result


def measure_healthz(base_url: str, requests: int = 200) -> float:
    """p50 ms of ``requests`` sequential GET /healthz: the HTTP floor (server and client
    framework, loopback, no work) to read /rank latencies against."""

    async def run() -> list[float]:
        latencies = []
        async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
            for i in range(requests + 5):
                start = time.perf_counter()
                (await client.get("/healthz")).raise_for_status()
                if i >= 5:  # the first requests open the connection
                    latencies.append(time.perf_counter() - start)
        return latencies

    return 1_000.0 * percentile(asyncio.run(run()), 50)


async def server_cpu_s(client: httpx.AsyncClient) -> float:
    """``process_cpu_seconds_total`` of the service (GET /metrics), NaN if absent."""
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("process_cpu_seconds_total "):
            return float(line.split()[1])
    return math.nan


async def _closed_loop(one: Send, concurrency: int, limit: int, deadline: float) -> None:
    sent = 0

    async def client_loop() -> None:
        nonlocal sent
        while sent < limit and time.perf_counter() < deadline:
            sent += 1
            await one(sent, time.perf_counter())

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))


async def _open_loop(one: Send, concurrency: int, limit: int, deadline: float, rate: float) -> int:
    """Start request i at t0 + i/rate (at most ``concurrency`` in flight) until the deadline;
    returns how many scheduled requests could not be sent because too many were in flight."""
    in_flight = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    t0 = time.perf_counter()
    i = 0
    while i < limit:
        scheduled = t0 + i / rate
        if scheduled >= deadline:
            break
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        await in_flight.acquire()
        if time.perf_counter() >= deadline:  # the server fell behind: stop on time
            in_flight.release()
            break

        async def run(i: int = i, scheduled: float = scheduled) -> None:
            try:
                await one(i, scheduled)
            finally:
                in_flight.release()

        task = asyncio.create_task(run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    await asyncio.gather(*tasks)
    return min(limit, math.ceil((deadline - t0) * rate)) - i
