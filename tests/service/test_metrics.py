"""Metrics: the exact names and labels of DESIGN §6, per-app registries, values that move."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import RANK_STAGES, Metrics, StoreMetrics
from service.store.base import StoreObserver
from tests.service.support import event, ingest

DESIGN_METRICS = {
    "solar_request_duration_seconds": ("histogram", {"route", "status"}),
    "solar_rank_candidates": ("histogram", set()),
    "solar_batch_size": ("histogram", set()),
    "solar_batch_queue_seconds": ("histogram", set()),
    "solar_batch_compute_seconds": ("histogram", set()),
    "solar_queue_depth": ("gauge", set()),
    "solar_ingest_events": ("counter", {"result"}),
    "solar_factor_update_seconds": ("histogram", set()),
    "solar_store_seconds": ("histogram", {"op"}),
    "solar_store_conflicts": ("counter", set()),
    "solar_rejected": ("counter", {"reason"}),
    "solar_unknown_items": ("counter", set()),
    "solar_factor_residual_ratio": ("histogram", set()),
    "solar_model_info": ("gauge", {"version", "rank", "dim"}),
    "solar_state_rebuilds": ("counter", {"reason", "version", "path"}),
    "solar_model_states": ("gauge", {"version"}),
    "solar_applied_versions": ("gauge", set()),
    "solar_backfill_users_total": ("gauge", {"version"}),
    "solar_backfill_users_done": ("gauge", {"version"}),
    "solar_backfill_events": ("counter", {"version"}),
}


def test_every_design_metric_exists_with_its_labels() -> None:
    metrics = Metrics()
    families = {f.name: f for f in metrics.registry.collect()}
    for name, (kind, _) in DESIGN_METRICS.items():
        assert families[name].type == kind, name
    metrics.request_duration.labels(route="/rank", status="200").observe(0.0004)
    metrics.ingest_events.labels(result="accepted").inc()
    metrics.store_seconds.labels(op="read").observe(0.001)
    metrics.rejected.labels(reason="invalid").inc()
    metrics.set_model("abc", 32, 64)
    text = metrics_text(metrics)
    for family in text_string_to_metric_families(text):
        if family.name in DESIGN_METRICS:
            for sample in family.samples:
                assert set(sample.labels) - {"le"} <= DESIGN_METRICS[family.name][1]
    assert (
        'solar_request_duration_seconds_bucket{le="0.0005",route="/rank",status="200"} 1.0' in text
    )
    assert 'solar_request_duration_seconds_bucket{le="1.0",route="/rank",status="200"}' in text
    assert 'solar_ingest_events_total{result="accepted"} 1.0' in text
    assert 'solar_model_info{dim="64",rank="32",version="abc"} 1.0' in text


def metrics_text(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_apps_do_not_share_registries() -> None:
    a, b = Metrics(), Metrics()
    a.unknown_items.inc(3)
    assert a.registry.get_sample_value("solar_unknown_items_total") == 3
    assert b.registry.get_sample_value("solar_unknown_items_total") == 0


def test_store_observer_adapter() -> None:
    metrics = Metrics()
    observer: StoreObserver = metrics.store_observer()
    assert isinstance(observer, StoreMetrics)
    observer.op_seconds("write", 0.002)
    observer.conflict()
    registry = metrics.registry
    assert registry.get_sample_value("solar_store_seconds_count", {"op": "write"}) == 1
    assert registry.get_sample_value("solar_store_conflicts_total") == 1


def test_apply_lag_buckets_resolve_the_100_ms_target() -> None:
    """A lag of 110 ms reads as 100–125 ms, not "somewhere in 100–250": a p99 near the
    target (docs/DESIGN.md §10) is interpolated within 25 ms either side of it."""
    metrics = Metrics()
    metrics.apply_lag_seconds.observe(0.11)

    def below(le: str) -> float | None:
        return metrics.registry.get_sample_value("solar_apply_lag_seconds_bucket", {"le": le})

    assert (below("0.075"), below("0.1"), below("0.125")) == (0.0, 0.0, 1.0)


def test_model_info_keeps_one_series() -> None:
    metrics = Metrics()
    metrics.set_model("v1", 32, 64)
    metrics.set_model("v2", 32, 64)
    text = metrics_text(metrics)
    assert 'version="v2"' in text and 'version="v1"' not in text


@pytest.mark.anyio
async def test_metrics_move_with_traffic(client: httpx.AsyncClient) -> None:
    await ingest(client, [event("u1", i, float(i)) for i in range(1, 6)] + [event("u1", 1, 1.0)])
    await client.post("/rank", json={"user_id": "u1", "candidates": [1, 2, "zzz"]})
    await client.get("/users/u1")
    await client.get("/users/u2")
    await client.post("/rank", json={"user_id": "bad id", "candidates": [1]})
    await client.get("/no/such/path")
    text = (await client.get("/metrics")).text
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }

    def value(name: str, **labels: str) -> float:
        return values.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("solar_ingest_events_total", result="accepted") == 5
    assert value("solar_ingest_events_total", result="duplicate") == 1
    assert value("solar_request_duration_seconds_count", route="/rank", status="200") == 1
    assert value("solar_request_duration_seconds_count", route="/rank", status="422") == 1
    assert (
        value("solar_request_duration_seconds_count", route="/users/{user_id}", status="200") == 1
    )
    assert (
        value("solar_request_duration_seconds_count", route="/users/{user_id}", status="404") == 1
    )
    assert value("solar_request_duration_seconds_count", route="unmatched", status="404") == 1
    assert not any("u1" in str(key) or "u2" in str(key) for key in values)  # never by user
    assert value("solar_rank_candidates_count") == 1
    for stage in RANK_STAGES:  # every stage of the /rank that was served (lookup included)
        assert value("solar_rank_stage_seconds_count", stage=stage) >= 1, stage
    assert value("solar_unknown_items_total") == 1
    assert value("solar_batch_size_count") >= 1
    assert value("solar_factor_update_seconds_count") >= 1
    assert value("solar_factor_residual_ratio_count") >= 1
    appends = value("solar_store_seconds_count", op="append")  # embedded: one per user
    assert appends + value("solar_store_seconds_count", op="append_batch") >= 1  # redis
    assert value("solar_store_seconds_count", op="read_log") >= 1
    assert value("solar_store_seconds_count", op="commit") >= 1
    assert value("solar_apply_batch_events_count") >= 1
    assert value("solar_apply_lag_seconds_count") >= 1
    assert value("solar_rejected_total", reason="invalid") == 1
