"""Ingest: deduplication, factors equal to a batch recompute, logs, rebuilds, write races."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from model.lowrank import Decay, LowRankState
from service.core.ingest import EventColumns, Ingestor
from service.core.serving_model import load_serving_model
from service.core.userlocks import UserLocks
from service.core.users import UserStates
from service.errors import StoreBusy
from service.metrics import Metrics
from service.store.eventlog import RECORD_SIZE, decode_log, make_records
from service.store.memory import MemoryStore
from tests.service.conftest import SettingsFactory
from tests.service.support import event, gram, ingest, reference_state, running_app


def encode_events(*columns: Any) -> bytes:
    """The log bytes of events given as ``make_records``'s four columns."""
    return make_records(*columns).tobytes()


pytestmark = pytest.mark.anyio


def _events(raw: list[dict[str, Any]]) -> EventColumns:
    return EventColumns(
        user_ids=[e["user_id"] for e in raw],
        ts=[e["ts"] for e in raw],
        items=[e["item_id"] for e in raw],
        actions=[e.get("action") for e in raw],
        event_ids=[e.get("event_id") for e in raw],
    )


def _ingestor(
    make_settings: SettingsFactory, store: MemoryStore | None = None, **kw: Any
) -> Ingestor:
    settings = make_settings(**kw)
    metrics = Metrics()
    store = store if store is not None else MemoryStore(observer=metrics.store_observer())
    users = UserStates(
        store, load_serving_model(settings), metrics, settings.rebuild_residual_ratio
    )
    return Ingestor(
        users=users,
        metrics=metrics,
        locks=UserLocks(),
        cas_retries=settings.cas_retries,
        log_cap=settings.log_cap,
    )


async def _state(ingestor: Ingestor, user_id: str) -> LowRankState:
    blob = await ingestor.users.store.get_state(user_id)
    assert blob is not None
    return LowRankState.from_bytes(blob)


def test_events_are_grouped_by_user_in_arrival_order() -> None:
    events = _events([event("b", 1, 1.0), event("a", 2, 2.0), event("b", 3, 3.0)])
    groups = events.by_user()
    assert list(groups) == ["b", "a"]
    assert groups["b"]["ts"].tolist() == [1.0, 3.0] and groups["a"]["ts"].tolist() == [2.0]
    assert (
        groups["b"]["item"].tolist()
        == make_records([0, 0], [1, 3], [None] * 2, [None] * 2)["item"].tolist()
    )


async def test_factors_equal_a_batch_recompute(
    make_settings: SettingsFactory, checkpoint_dir: Path
) -> None:
    ingestor = _ingestor(make_settings)
    raw = [event("u", i % 43 + 1, float(i), ("click", None, "like")[i % 3]) for i in range(60)]
    for start in range(0, 60, 7):  # several requests: incremental Brand updates
        await ingestor.ingest(_events(raw[start : start + 7]))
    state = await _state(ingestor, "u")
    ref = reference_state(str(checkpoint_dir), raw)
    assert state.n == 60 and state.t_ref == 59.0
    np.testing.assert_allclose(state.sigma, ref.sigma, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gram(state), gram(ref), atol=1e-4)
    np.testing.assert_allclose(state.interests(4), ref.interests(4), atol=1e-4)


async def test_duplicates_by_event_id_and_by_identity(make_settings: SettingsFactory) -> None:
    ingestor = _ingestor(make_settings)
    first = await ingestor.ingest(
        _events([event("u", 1, 1.0, event_id="x"), event("u", 2, 2.0, "click")])
    )
    assert (first.accepted, first.duplicates, first.users) == (2, 0, 1)
    again = await ingestor.ingest(
        _events(
            [
                event("u", 9, 9.0, event_id="x"),  # same id, other content: duplicate
                event("u", 2, 2.0, "click"),  # same identity: duplicate
                event("u", 2, 2.0, "like"),  # other action: new
                event("u", 2, 2.5, "click"),  # other time: new
            ]
        )
    )
    assert (again.accepted, again.duplicates) == (2, 2)
    assert (await _state(ingestor, "u")).n == 4
    registry = ingestor.metrics.registry
    assert registry.get_sample_value("solar_ingest_events_total", {"result": "accepted"}) == 4
    assert registry.get_sample_value("solar_ingest_events_total", {"result": "duplicate"}) == 2


async def test_a_request_of_only_duplicates_writes_nothing(make_settings: SettingsFactory) -> None:
    ingestor = _ingestor(make_settings)
    events = _events([event("u", 1, 1.0)])
    await ingestor.ingest(events)
    version = (await ingestor.users.store.read("u", with_log=False)).version
    await ingestor.ingest(events)
    assert (await ingestor.users.store.read("u", with_log=False)).version == version


async def test_log_is_appended_and_capped(make_settings: SettingsFactory) -> None:
    ingestor = _ingestor(make_settings, log_cap=5)
    await ingestor.ingest(_events([event("u", i, float(i)) for i in range(1, 9)]))
    log = decode_log((await ingestor.users.store.read("u")).log)
    assert list(log["ts"]) == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert (await _state(ingestor, "u")).n == 8  # the factors keep every event


async def test_state_of_another_model_is_rebuilt_from_the_log(
    make_settings: SettingsFactory, other_checkpoint_dir: Path, checkpoint_dir: Path
) -> None:
    store = MemoryStore()
    old = _ingestor(make_settings, store=store, model_path=other_checkpoint_dir)
    raw = [event("u", i, float(i), "share") for i in range(1, 11)]
    await old.ingest(_events(raw[:6]))
    new = _ingestor(make_settings, store=store)
    assert (await _state(new, "u")).tag == old.users.model.version
    await new.ingest(_events(raw[6:]))
    state = await _state(new, "u")
    assert state.tag == new.users.model.version
    ref = reference_state(str(checkpoint_dir), raw)
    np.testing.assert_allclose(gram(state), gram(ref), atol=1e-4)
    assert (
        new.metrics.registry.get_sample_value(
            "solar_state_rebuilds_total", {"reason": "model_version"}
        )
        == 1
    )


async def test_corrupt_state_is_rebuilt(make_settings: SettingsFactory) -> None:
    ingestor = _ingestor(make_settings)
    log = encode_events([1.0, 2.0], [1, 2], [None, None], [None, None])
    assert await ingestor.users.store.replace("u", 0, b"garbage", log)
    result = await ingestor.ingest(_events([event("u", 3, 3.0)]))
    assert result.accepted == 1
    state = await _state(ingestor, "u")
    assert state.n == 3
    assert len((await ingestor.users.store.read("u")).log) == 3 * RECORD_SIZE


async def test_residual_over_threshold_triggers_a_rebuild(make_settings: SettingsFactory) -> None:
    # rank 2 with no oversampling keeps ℓ = 2 < d: a varied history leaves a large residual.
    ingestor = _ingestor(make_settings, rank=2, oversample=0, rebuild_residual_ratio=0.05)
    await ingestor.ingest(_events([event("u", i, float(i)) for i in range(1, 30)]))
    await ingestor.ingest(_events([event("u", i, 100.0 + i) for i in range(1, 10)]))
    rebuilds = ingestor.metrics.registry.get_sample_value(
        "solar_state_rebuilds_total", {"reason": "residual"}
    )
    assert rebuilds is not None and rebuilds >= 1
    state = await _state(ingestor, "u")
    assert state.n == 38 and state.ell == 2


class _RacingStore(MemoryStore):
    """Loses the first ``losses`` compare-and-set writes, as if another replica wrote first."""

    def __init__(self, losses: int) -> None:
        super().__init__()
        self.losses = losses

    async def write_if_unchanged(self, user_id: str, expected_version: int, *args: Any) -> bool:
        if self.losses > 0:
            self.losses -= 1
            return False
        return await super().write_if_unchanged(user_id, expected_version, *args)


async def test_lost_races_are_retried(make_settings: SettingsFactory) -> None:
    ingestor = _ingestor(make_settings, store=_RacingStore(losses=3), cas_retries=3)
    result = await ingestor.ingest(_events([event("u", 1, 1.0)]))
    assert result.accepted == 1
    assert (await _state(ingestor, "u")).n == 1


async def test_too_many_lost_races_give_up(make_settings: SettingsFactory) -> None:
    ingestor = _ingestor(make_settings, store=_RacingStore(losses=10), cas_retries=2)
    with pytest.raises(StoreBusy):
        await ingestor.ingest(_events([event("u", 1, 1.0)]))
    assert await ingestor.users.store.get_state("u") is None


@pytest.mark.parametrize("path", ["ingest", "rank"])
async def test_lost_state_key_is_rebuilt_from_the_log(
    make_settings: SettingsFactory, redis_url: str, path: str
) -> None:
    """Only the state key gone (an eviction): history comes back from the log, not from zero."""
    history = [event("u1", item, 100.0 + i) for i, item in enumerate([1, 2, 3, 4, 5, 6])]
    async with running_app(make_settings(redis_url=redis_url)) as (_, client):
        await ingest(client, history)
        with redis.Redis.from_url(redis_url) as raw:
            assert raw.delete("solar:{u1}:state") == 1
        if path == "ingest":
            await ingest(client, [event("u1", 7, 200.0)])
            expected = len(history) + 1
        else:
            response = await client.post("/rank", json={"user_id": "u1", "candidates": [1, 2]})
            assert response.json()["history_length"] == len(history)
            expected = len(history)
        user = (await client.get("/users/u1")).json()
        assert user["history_length"] == expected
        metrics = (await client.get("/metrics")).text
        assert 'solar_state_rebuilds_total{reason="missing"} 1.0' in metrics


async def test_changed_half_life_rebuilds_instead_of_mixing_weights(
    make_settings: SettingsFactory,
) -> None:
    """States built without decay are not mixed with decayed updates after a config change."""
    store = MemoryStore()
    plain = _ingestor(make_settings, store=store)
    raw = [event("u", i, 100.0 * i) for i in range(1, 11)]
    await plain.ingest(_events(raw[:6]))
    decayed = _ingestor(make_settings, store=store, half_life_s=300.0)
    await decayed.ingest(_events(raw[6:]))
    state = await _state(decayed, "u")
    assert state.tag == str(decayed.users.model.state_tag) != str(plain.users.model.state_tag)
    ts = np.array([e["ts"] for e in raw])
    assert state.n_eff == pytest.approx(float(Decay(300.0).weights(ts, ts.max()).sum()))
    rebuilds = decayed.metrics.registry.get_sample_value(
        "solar_state_rebuilds_total", {"reason": "config"}
    )
    assert rebuilds == 1
