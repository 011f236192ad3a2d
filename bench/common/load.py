"""/rank load generation for the benchmarks: closed loop (saturation) or open loop (a fixed
request rate), 127.0.0.1 only, bounded in requests and time. Used through ``bench.common.harness``.

Raw httpx with request bodies encoded before the clock starts, not ``solar_tools.client``:
the client's JSON encoding and answer decoding (2,048 candidates per request) would be
charged to the service's latency, and a load generator must not retry its 503s. Sequential
latency (one request at a time) goes through the leaner ``bench.common.keepalive`` instead:
httpx's own time per request adds straight to it.
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

from bench.common.keepalive import KeepAliveClient
from service.core.items import ItemId, external_id

__all__ = [
    "RankResult",
    "headers",
    "measure_healthz",
    "measure_rank",
    "measure_sequential",
    "percentile",
]

JSON = "application/json"
_CANDIDATE_POOL = 32  # distinct pre-encoded candidate lists cycled through by the clients

Send = Callable[[int, float], Awaitable[None]]


def headers(token: str | None) -> dict[str, str]:
    """JSON content type, plus the bearer token when the service requires one."""
    return {"content-type": JSON, **_auth(token)}


def _auth(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


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
    bodies = _rank_bodies(users, items, candidates, top_k, mode, seed)
    limit = max_requests if max_requests is not None else 10**9
    return asyncio.run(
        _measure(
            base_url, bodies, mode, concurrency, limit, max_seconds, rate, warmup_requests, token
        )
    )


def _rank_bodies(
    users: Sequence[str], items: Sequence[str], candidates: int, top_k: int, mode: str, seed: int
) -> list[str]:
    """``_CANDIDATE_POOL`` /rank bodies (JSON), each for a random user of ``users`` with
    ``candidates`` random ids of ``items``, written as the API writes them (``external_id``:
    decimal ids as JSON integers, what a client reading ``GET /model/items`` sends back)."""
    rng = random.Random(seed)
    pool = [external_id(item) for item in items]

    def draw() -> list[ItemId]:
        # A vocabulary smaller than M (ml-100k has 1,682 items) is sampled with replacement,
        # so that every request really carries M candidates.
        if candidates <= len(pool):
            return rng.sample(pool, candidates)
        return rng.choices(pool, k=candidates)

    return [
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


def measure_sequential(
    base_url: str,
    users: Sequence[str],
    items: Sequence[str],
    *,
    candidates: int = 2_048,
    top_k: int = 100,
    mode: str = "svd",
    max_requests: int = 300,
    max_seconds: float = 60.0,
    warmup_requests: int = 5,
    seed: int = 0,
    token: str | None = None,
) -> RankResult:
    """Sequential /rank over one keep-alive connection, through the lean
    ``bench.common.keepalive`` client rather than httpx (whose own ~0.75 ms per request, and
    more for a 2,048-id body, would be charged to the service): the same bodies as
    :func:`measure_rank`, sent back to back, ``max_requests`` or ``max_seconds`` whichever
    comes first."""
    bodies = _rank_bodies(users, items, candidates, top_k, mode, seed)
    result = RankResult(mode=mode)
    with KeepAliveClient(base_url, headers=_auth(token)) as client:
        requests = [client.prepare("POST", "/rank", b.encode(), JSON) for b in bodies]
        for request in requests[:warmup_requests]:
            client.send(request)
        server_cpu = _cpu_s(client.get("/metrics")[1])
        client_cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + max_seconds
        for i in range(max_requests):
            sent = time.perf_counter()
            if sent >= deadline:
                break
            status, _ = client.send(requests[i % len(requests)])
            if status == 200:
                result.latencies_s.append(time.perf_counter() - sent)
            else:
                result.failures += 1
        result.seconds = time.perf_counter() - start
        result.client_cpu_s = time.process_time() - client_cpu
        result.server_cpu_s = _cpu_s(client.get("/metrics")[1]) - server_cpu
    return result


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
    """p50 ms of ``requests`` sequential GET /healthz over one keep-alive connection (the
    lean client of :func:`measure_sequential`): the HTTP floor (the server's framework,
    loopback, no work) to read sequential /rank latencies against."""
    latencies = []
    with KeepAliveClient(base_url, timeout_s=10.0) as client:
        request = client.prepare("GET", "/healthz")
        for i in range(requests + 5):
            start = time.perf_counter()
            status, _ = client.send(request)
            if status != 200:
                raise RuntimeError(f"GET /healthz answered {status}")
            if i >= 5:
                latencies.append(time.perf_counter() - start)
    return 1_000.0 * percentile(latencies, 50)


async def server_cpu_s(client: httpx.AsyncClient) -> float:
    """``process_cpu_seconds_total`` of the service (GET /metrics), NaN if absent."""
    return _cpu_s((await client.get("/metrics")).content)


def _cpu_s(metrics_text: bytes) -> float:
    """``process_cpu_seconds_total`` in a /metrics answer, NaN if absent."""
    for line in metrics_text.decode().splitlines():
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
