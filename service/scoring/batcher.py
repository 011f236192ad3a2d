"""A micro-batcher in the style of Ray Serve's ``batching.py``.

``submit(item)`` enqueues one input and awaits its output. A consumer task waits for the first
queued input, then fills the batch until ``max_batch`` inputs or ``max_wait_s`` seconds, drops
callers that were cancelled meanwhile, and runs the synchronous ``handler`` on the batch in a
worker thread (model compute never runs on the event loop): on the whole batch, or, given a
``split``, on each of its parts in turn, answering a part's callers as soon as it is done. A
failure of the handler is set on every future of its part; a handler returning a different
number of outputs than inputs fails the part too. A full queue raises ``QueueFull`` at once
(503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.errors import BatcherClosed, QueueFull
from service.metrics import Metrics
from service.runtime import name_os_thread

__all__ = ["BatchSizeMismatch", "MicroBatcher"]

logger = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class BatchSizeMismatch(RuntimeError):
    """The handler returned a different number of outputs than it was given inputs."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__(f"batch handler returned {outputs} outputs for {inputs} inputs")


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    enqueued_s: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[In, Out]):
    """Batches ``submit`` calls into ``handler(list_of_inputs) -> list_of_outputs`` calls.

    Args:
        handler: synchronous batch function, run in a worker thread; outputs in input order.
        max_batch: most inputs per handler call.
        max_wait_s: how long a batch keeps filling after its first input, seconds.
        max_queue: most inputs waiting; beyond it ``submit`` raises ``QueueFull``.
        workers: batches processed concurrently (threads).
        metrics: records batch size, queue wait, compute time and queue depth.
        split: the parts of a batch that the handler computes apart (lists of positions
            that together cover the batch once, in the order to run them), each part its
            own handler call whose callers are answered when it returns; None: one part.
            The scorer's parts are its passes: without this, the first four requests of a
            batch of six (M = 2,048: four fill a CPU pass) waited for the pass of the last
            two.
    """

    def __init__(
        self,
        handler: Callable[[Sequence[In]], Sequence[Out]],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        workers: int = 1,
        metrics: Metrics | None = None,
        split: Callable[[Sequence[In]], list[list[int]]] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or workers < 1 or max_wait_s < 0:
            raise ValueError("max_batch, max_queue and workers must be ≥ 1, max_wait_s ≥ 0")
        self._handler = handler
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._workers = workers
        self._metrics = metrics
        self._split = split
        self._queue: asyncio.Queue[_Pending[In, Out]] = asyncio.Queue(maxsize=max_queue)
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def depth(self) -> int:
        """Inputs waiting in the queue."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the consumer tasks (call from a running event loop)."""
        if self._tasks:
            return
        self._closed = False
        self._executor = ThreadPoolExecutor(
            self._workers, thread_name_prefix="solar-batch", initializer=_name_batch_thread
        )
        self._tasks = [
            asyncio.create_task(self._consume(), name=f"solar-batcher-{i}")
            for i in range(self._workers)
        ]

    async def prime(self, setup: Callable[[], object]) -> None:
        """Run ``setup`` once on each batch thread (after ``start``), before any input.

        The scorer keeps per-thread buffers and the pass's first call of a shape pays its
        set-up: warming up on the threads that will score means the first requests pay none.
        A barrier holds each call until all have started, so every thread gets exactly one.
        """
        if self._executor is None:
            raise BatcherClosed()
        barrier = threading.Barrier(self._workers)

        def once() -> None:
            barrier.wait()
            setup()

        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, once) for _ in range(self._workers))
        )

    async def submit(self, item: In) -> Out:
        """Enqueue ``item`` and wait for its output.

        Raises:
            QueueFull: ``max_queue`` inputs are already waiting.
            BatcherClosed: the batcher is stopping or was never started.
            Exception: whatever the handler raised for this input's batch.
        """
        if self._closed or not self._tasks:
            raise BatcherClosed()
        pending: _Pending[In, Out] = _Pending(item, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull as exc:
            raise QueueFull(self.max_queue) from exc
        self._record_depth()
        return await pending.future

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Refuse new inputs, finish the queued ones (up to ``drain_timeout_s``), stop."""
        self._closed = True
        if not self._tasks:
            return
        try:
            await asyncio.wait_for(self._queue.join(), drain_timeout_s)
        except TimeoutError:
            logger.warning("batcher: %d requests still queued at shutdown", self.depth)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._fail_queued()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _fail_queued(self) -> None:
        while not self._queue.empty():
            _fail([self._queue.get_nowait()], BatcherClosed())
            self._queue.task_done()

    def _record_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._queue.qsize())

    async def _fill(self, batch: list[_Pending[In, Out]]) -> None:
        """Wait for one input, then fill until ``max_batch`` or ``max_wait_s`` after it."""
        batch.append(await self._queue.get())
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining_s = deadline - time.perf_counter()
            if remaining_s <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining_s))
            except TimeoutError:
                break
        self._record_depth()

    async def _consume(self) -> None:
        while True:
            batch: list[_Pending[In, Out]] = []
            try:
                await self._fill(batch)
                await self._run(batch)
            except asyncio.CancelledError:
                _fail(batch, BatcherClosed())  # stopped mid-batch: nobody waits forever
                raise
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        live = [p for p in batch if not p.future.done()]  # skip cancelled callers
        if not live:
            return
        now = time.perf_counter()
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(live))
            for pending in live:
                self._metrics.batch_queue_seconds.observe(now - pending.enqueued_s)
                self._metrics.stage("queue", now - pending.enqueued_s)
        try:
            parts = self._parts(live)
        except Exception as exc:
            logger.exception("splitting a batch of %d failed", len(live))
            _fail(live, exc)
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._run_parts, loop, parts, now)

    def _parts(self, live: list[_Pending[In, Out]]) -> list[list[_Pending[In, Out]]]:
        if self._split is None:
            return [live]
        positions = self._split([p.item for p in live])
        if sorted(i for part in positions for i in part) != list(range(len(live))):
            raise ValueError(f"the split of a batch of {len(live)} does not cover it once")
        return [[live[i] for i in part] for part in positions if part]

    def _run_parts(
        self,
        loop: asyncio.AbstractEventLoop,
        parts: list[list[_Pending[In, Out]]],
        started_s: float,
    ) -> None:
        """In the batch thread: the handler on each part in turn, each part's callers
        answered through the loop as soon as it returns (the thread does not wait for the
        loop between parts). A part whose callers have all gone is skipped (its futures'
        state is read from this thread: at worst one pass too many)."""
        for part in parts:
            if all(p.future.done() for p in part):
                continue
            try:
                outputs, computed_s = self._call([p.item for p in part])
            except Exception as exc:  # every caller of the part gets the failure
                loop.call_soon_threadsafe(self._fail_part, part, exc)
                continue
            loop.call_soon_threadsafe(self._answer, part, outputs, computed_s, started_s)

    def _fail_part(self, part: list[_Pending[In, Out]], exc: Exception) -> None:
        logger.error("batch of %d failed", len(part), exc_info=exc)
        _fail(part, exc)

    def _answer(
        self,
        part: list[_Pending[In, Out]],
        outputs: Sequence[Out],
        computed_s: float,
        started_s: float,
    ) -> None:
        """On the loop: set the part's results; ``started_s``: when its batch started (the
        "pass" stage of a later part includes the earlier parts)."""
        if self._metrics is not None:
            # From the thread's end of compute to the loop running this: the thread → loop
            # hand-off, which grows when the loop is busy or the GIL is held elsewhere.
            handoff_s = time.perf_counter() - computed_s
            for _ in part:
                self._metrics.stage("pass", computed_s - started_s)
                self._metrics.stage("handoff", handoff_s)
        for pending, output in zip(part, outputs, strict=True):
            if not pending.future.done():
                pending.future.set_result(output)

    def _call(self, items: list[In]) -> tuple[Sequence[Out], float]:
        """The handler's outputs and the ``perf_counter`` time it finished at."""
        start = time.perf_counter()
        outputs = self._handler(items)
        end = time.perf_counter()
        if self._metrics is not None:
            self._metrics.batch_compute_seconds.observe(end - start)
        if len(outputs) != len(items):
            raise BatchSizeMismatch(len(items), len(outputs))
        return outputs, end


def _name_batch_thread() -> None:
    """The batch thread's name for the kernel too ("solar-batch-0", …), so that its CPU time
    and run-queue waits can be read apart from the event loop's (``bench.e2e.stalls``)."""
    name_os_thread(threading.current_thread().name.replace("_", "-"))


def _fail(batch: Sequence[_Pending[In, Out]], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
