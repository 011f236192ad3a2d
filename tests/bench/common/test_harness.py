"""bench.common's harness and load against a real `solar serve` and redis-server."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.common import harness
from bench.common.load import percentile

pytestmark = pytest.mark.e2e


def test_percentile() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 99) == pytest.approx(1.99)
    assert math.isnan(percentile([], 50))


def test_user_events_are_deterministic_and_valid() -> None:
    items = [str(i) for i in range(1, 101)]
    events = harness.user_events("u", 50, items, seed=3, kinds=["click"])
    assert events == harness.user_events("u", 50, items, seed=3, kinds=["click"])
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert {e["item_id"] for e in events} <= set(items)
    assert len({e["event_id"] for e in events}) == 50


def test_seed_and_measure_end_to_end(tmp_path: Path) -> None:
    model = harness.random_checkpoint(tmp_path / "model", n_items=200)
    items = harness.vocabulary(model)
    assert items[:3] == ["1", "2", "3"] and harness.actions(model) == ["click", "like"]
    with harness.redis_server() as redis_url, harness.service(model, redis_url) as base:
        seeded = harness.seed_users(base, ["a", "b"], 300, items, batch=100)
        assert (seeded.events, seeded.accepted) == (600, 600) and seeded.events_per_s > 0
        closed = harness.measure_rank(
            base, ["a", "b"], items, candidates=150, top_k=10, concurrency=3, max_requests=30
        )
        assert (len(closed.latencies_s), closed.failures) == (30, 0)
        assert closed.requests_per_s > 0 and closed.p99_ms >= closed.p50_ms > 0
        server_ms, client_ms = closed.cpu_ms_per_request
        assert server_ms > 0 and client_ms > 0
        paced = harness.measure_rank(
            base, ["a"], items, candidates=50, mode="softmax", rate=40, max_seconds=0.5
        )
        assert len(paced.latencies_s) + paced.failures + paced.unsent == 20
        assert paced.failures == 0 and paced.offered_rate == 40
        seq = harness.measure_sequential(
            base, ["a", "b"], items, candidates=150, top_k=10, max_requests=12
        )
        assert (len(seq.latencies_s), seq.failures) == (12, 0) and seq.p99_ms >= seq.p50_ms > 0
        assert seq.cpu_ms_per_request[0] > 0
        assert 0 < harness.measure_healthz(base, requests=20) < seq.p50_ms
