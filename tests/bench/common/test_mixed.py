"""bench/common/mixed.py: the mix's bodies and its Poisson arrivals (no server needed)."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time

import pytest

from bench.common import mixed


def _load() -> mixed.MixedLoad:
    users = [f"u{k}" for k in range(100)]
    return mixed.MixedLoad(users, [str(i) for i in range(1, 5_001)], actions=["click"])


def test_rank_bodies_hold_m_candidates_of_which_8_unknown() -> None:
    bodies = mixed._Bodies(_load(), random.Random(0))
    body = json.loads(bodies.rank())
    assert len(body["candidates"]) == 2_048 and body["top_k"] == 50
    assert sum(c.startswith("unknown-") for c in body["candidates"]) == 8
    sizes = [len(json.loads(bodies.ingest())["events"]) for _ in range(300)]
    assert min(sizes) == 1 and max(sizes) == 20
    hot = [bodies.user() for _ in range(2_000)]
    assert hot.count("u0") > 10 * max(1, hot.count("u99"))  # Zipf: the first user is hot


def test_arrivals_are_poisson_at_the_rate() -> None:
    """~rate·seconds arrivals whose gaps have a coefficient of variation near 1 (exponential;
    a constant pace would give 0)."""
    starts: list[float] = []

    async def one(scheduled: float) -> None:
        starts.append(scheduled)

    rate, seconds = 400.0, 1.0
    deadline = time.perf_counter() + seconds
    unsent = asyncio.run(mixed._poisson(one, rate, deadline, 64, random.Random(1)))
    assert unsent == 0
    assert len(starts) == pytest.approx(rate * seconds, abs=4 * (rate * seconds) ** 0.5)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.2)
