"""The applier's partition ownership across a graceful restart (service/core/applier.py)."""

from __future__ import annotations

import asyncio

import pytest

from service.core.applier import Applier
from service.core.serving_model import load_serving_model
from service.history.memory import MemoryHistory
from service.metrics import Metrics
from service.store.memory import MemoryStore
from service.store.models import MemoryModels
from service.stream.memory import MemoryStream
from tests.service.conftest import SettingsFactory

pytestmark = pytest.mark.anyio


async def _first_rebalance(applier: Applier) -> asyncio.Task[None]:
    """``applier.run()`` as a task, once it holds partitions (bounded: a hang fails)."""
    task = asyncio.create_task(applier.run())
    for _ in range(500):
        if applier.owned:
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("the applier took no partition")


async def test_a_worker_started_after_a_graceful_stop_takes_every_partition(
    make_settings: SettingsFactory,
) -> None:
    """A stopped applier leaves the live count at once: its successor's share is all P
    partitions from its first round, not half of them until the heartbeat expires."""
    settings = make_settings(apply_lease_s=60.0)
    store, stream, history = MemoryStore(), MemoryStream(settings.partitions), MemoryHistory()
    model = load_serving_model(settings)

    def applier() -> Applier:
        return Applier.create(
            settings, store, stream, model, Metrics(), history=history, models=MemoryModels()
        )

    first = applier()
    task = await _first_rebalance(first)
    assert first.owned == list(range(settings.partitions))
    first.stop()
    await task
    second = applier()
    task = await _first_rebalance(second)
    try:
        assert second.owned == list(range(settings.partitions))
    finally:
        second.stop()
        await task
