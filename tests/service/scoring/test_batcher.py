"""The micro-batcher: batching by size and deadline, failures, cancellation, back-pressure."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from service.errors import BatcherClosed, QueueFull
from service.metrics import Metrics
from service.scoring.batcher import BatchSizeMismatch, MicroBatcher

pytestmark = pytest.mark.anyio


class Recorder:
    """A handler that doubles its inputs and remembers every batch and its thread."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.delay_s = delay_s

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay_s)
        return [2 * x for x in items]


def _batcher(handler: Recorder, **kw: float) -> MicroBatcher[int, int]:
    options = {"max_batch": 4, "max_wait_s": 0.05, "max_queue": 64, **kw}
    return MicroBatcher(
        handler,
        max_batch=int(options["max_batch"]),
        max_wait_s=float(options["max_wait_s"]),
        max_queue=int(options["max_queue"]),
        metrics=Metrics(),
    )


async def test_concurrent_submits_share_batches_off_the_loop_thread() -> None:
    handler = Recorder()
    batcher = _batcher(handler)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    finally:
        await batcher.stop()
    assert results == [2 * i for i in range(10)]  # every caller gets its own output
    assert [len(b) for b in handler.batches] == [4, 4, 2]  # filled to max_batch, in order
    assert threading.get_ident() not in handler.threads


async def test_the_batch_thread_is_named_for_the_kernel() -> None:
    """`top -H`, py-spy and bench.e2e.stalls tell the batch thread from the loop by it."""
    names: list[str] = []

    def handler(items: Sequence[int]) -> list[int]:
        tid = threading.get_native_id()
        names.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip())
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(
        handler, max_batch=1, max_wait_s=0.0, max_queue=4
    )
    batcher.start()
    try:
        assert await batcher.submit(7) == 7
    finally:
        await batcher.stop()
    assert names == ["solar-batch-0"]


async def test_a_lone_request_waits_at_most_max_wait() -> None:
    handler = Recorder()
    batcher = _batcher(handler, max_wait_s=0.02)
    batcher.start()
    try:
        start = time.perf_counter()
        assert await batcher.submit(21) == 42
        assert time.perf_counter() - start < 0.5
    finally:
        await batcher.stop()
    assert handler.batches == [[21]]


async def test_items_arriving_within_the_deadline_join_the_batch() -> None:
    handler = Recorder()
    batcher = _batcher(handler, max_wait_s=0.2)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.02)
        second = asyncio.create_task(batcher.submit(2))
        assert await asyncio.gather(first, second) == [2, 4]
    finally:
        await batcher.stop()
    assert handler.batches == [[1, 2]]


async def test_a_failure_reaches_every_caller_of_its_batch() -> None:
    def fail(items: Sequence[int]) -> list[int]:
        raise ValueError(f"bad batch {list(items)}")

    batcher: MicroBatcher[int, int] = MicroBatcher(fail, max_batch=8, max_wait_s=0.05, max_queue=8)
    batcher.start()
    try:
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(3)), return_exceptions=True
        )
    finally:
        await batcher.stop()
    assert all(isinstance(r, ValueError) for r in results)


async def test_outputs_are_counted_against_inputs() -> None:
    def short(items: Sequence[int]) -> list[int]:
        return list(items)[:-1]

    batcher: MicroBatcher[int, int] = MicroBatcher(short, max_batch=8, max_wait_s=0.05, max_queue=8)
    batcher.start()
    try:
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(3)), return_exceptions=True
        )
    finally:
        await batcher.stop()
    assert all(isinstance(r, BatchSizeMismatch) for r in results)


async def test_a_split_batch_answers_each_part_when_it_is_done() -> None:
    """Parts run in the split's order; the callers of the first are answered while the
    second still computes, and a part's failure reaches its own callers only."""
    done_s: dict[int, float] = {}
    calls: list[list[int]] = []

    def slow_second(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if 3 in items:
            raise ValueError("part with 3")
        time.sleep(0.0 if 2 in items else 0.3)
        return [2 * x for x in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(
        slow_second,
        max_batch=8,
        max_wait_s=0.05,
        max_queue=8,
        split=lambda items: [[2], [0, 1], [3]],
    )

    async def caller(i: int) -> int:
        result = await batcher.submit(i)
        done_s[i] = time.perf_counter()
        return result

    batcher.start()
    try:
        results = await asyncio.gather(*(caller(i) for i in range(4)), return_exceptions=True)
    finally:
        await batcher.stop()
    assert results[:3] == [0, 2, 4] and isinstance(results[3], ValueError)
    assert calls == [[2], [0, 1], [3]]
    assert done_s[0] - done_s[2] > 0.2  # 2 did not wait for the 0.3 s part


async def test_a_part_whose_callers_left_is_not_computed() -> None:
    calls: list[list[int]] = []

    def slow(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        time.sleep(0.2)
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(
        slow, max_batch=8, max_wait_s=0.05, max_queue=8, split=lambda items: [[0], [1]]
    )
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(0))
        gone = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.1)  # the batch started: part [0] computes
        gone.cancel()
        assert await first == 0
        await asyncio.sleep(0.3)
    finally:
        await batcher.stop()
    assert calls == [[0]]


async def test_a_split_that_does_not_cover_the_batch_fails_it() -> None:
    handler = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        handler, max_batch=8, max_wait_s=0.05, max_queue=8, split=lambda items: [[0], [0]]
    )
    batcher.start()
    try:
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(2)), return_exceptions=True
        )
    finally:
        await batcher.stop()
    assert all(isinstance(r, ValueError) for r in results) and handler.batches == []


async def test_cancelled_callers_are_skipped() -> None:
    handler = Recorder()
    batcher = _batcher(handler, max_wait_s=0.1)
    batcher.start()
    try:
        doomed = asyncio.create_task(batcher.submit(1))
        kept = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.01)  # both queued, the batch still filling
        doomed.cancel()
        assert await kept == 4
    finally:
        await batcher.stop()
    assert handler.batches == [[2]]


async def test_a_full_queue_refuses_at_once() -> None:
    handler = Recorder(delay_s=0.2)
    batcher = _batcher(handler, max_batch=1, max_wait_s=0.0, max_queue=2)
    batcher.start()
    try:
        running = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)  # taken out of the queue, being handled
        queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        start = time.perf_counter()
        with pytest.raises(QueueFull):
            await batcher.submit(3)
        assert time.perf_counter() - start < 0.05
        assert await asyncio.gather(running, *queued) == [0, 2, 4]
    finally:
        await batcher.stop()


async def test_stop_drains_the_queue_then_refuses() -> None:
    handler = Recorder(delay_s=0.01)
    batcher = _batcher(handler, max_batch=2, max_wait_s=0.0)
    batcher.start()
    pending = [asyncio.create_task(batcher.submit(i)) for i in range(6)]
    await asyncio.sleep(0)
    await batcher.stop()
    assert [t.result() for t in pending] == [2 * i for i in range(6)]
    with pytest.raises(BatcherClosed):
        await batcher.submit(1)


async def test_metrics_are_recorded() -> None:
    metrics = Metrics()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        Recorder(), max_batch=4, max_wait_s=0.01, max_queue=8, metrics=metrics
    )
    batcher.start()
    try:
        await asyncio.gather(*(batcher.submit(i) for i in range(4)))
    finally:
        await batcher.stop()
    registry = metrics.registry
    assert registry.get_sample_value("solar_batch_size_count") == 1
    assert registry.get_sample_value("solar_batch_size_sum") == 4
    assert registry.get_sample_value("solar_batch_queue_seconds_count") == 4
    assert registry.get_sample_value("solar_batch_compute_seconds_count") == 1
    assert registry.get_sample_value("solar_queue_depth") == 0


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch=0, max_wait_s=0.0, max_queue=1)
