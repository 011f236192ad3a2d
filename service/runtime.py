"""The long-lived process's runtime: the garbage collector tuned for it, its stalls observed.

A serve process holds a large, immortal heap after start-up (the model, the vocabulary's id
index, FastAPI's routes and schemas). CPython's cyclic collector walks every tracked object
of the oldest generation on a full collection, so each full collection paused the process
for the whole heap, in whichever request was running. :func:`freeze_heap` collects once and
moves everything alive into the permanent generation (``gc.freeze``), so later collections
walk only what requests allocate; the young-generation threshold is raised so the allocation
burst of one request (a 2,048-id list and its answer) does not trigger collections mid-request.

:class:`StallMonitor` records what would otherwise be invisible in a request's stages: every
collector pause (``gc.callbacks``) and how late a periodic event-loop tick runs (anything
holding the loop or the GIL: decoding, the applier, a collection).

:func:`name_os_thread` gives a thread a name the kernel shows (``/proc/<pid>/task/<tid>/comm``,
``top -H``, ``ps -L``, py-spy): Python's thread names stay inside the interpreter, so without
it every thread of a serve process reads "python", and the CPU time, run-queue waits and
context switches of the batch thread cannot be told from the event loop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import sys
import time
from typing import Any

from service.metrics import Metrics

__all__ = ["GC_THRESHOLDS", "StallMonitor", "freeze_heap", "name_os_thread"]

# (young, middle, old): the young threshold 50× CPython's 700, so a request's own allocations
# rarely trigger one; the older two as in CPython.
GC_THRESHOLDS = (35_000, 10, 10)


_PR_SET_NAME = 15  # prctl(2): the calling thread's name, at most 15 bytes


def name_os_thread(name: str) -> bool:
    """Name the calling thread for the kernel (Linux ``prctl(PR_SET_NAME)``; the name is cut
    to 15 bytes). Best effort: False where it is not supported or the call fails."""
    if sys.platform != "linux":
        return False
    try:
        return int(_libc().prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library the interpreter is linked against (glibc or musl)."""
    return ctypes.CDLL(None)


def freeze_heap() -> None:
    """Collect once, then exempt everything alive from later collections (call at the end of
    start-up); raise the young generation's threshold (see the module docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class StallMonitor:
    """Observes collector pauses and event-loop lag into ``metrics`` while started.

    Args:
        metrics: where ``solar_gc_pause_seconds{generation}`` and
            ``solar_event_loop_lag_seconds`` go.
        tick_s: the loop probe's period, seconds.
    """

    def __init__(self, metrics: Metrics, tick_s: float = 0.05) -> None:
        self._metrics = metrics
        self.tick_s = tick_s
        self._gc_start = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            pause = time.perf_counter() - self._gc_start
            self._metrics.gc_pause_seconds.labels(generation=str(info["generation"])).observe(pause)

    async def _probe(self) -> None:
        while True:
            expected = time.perf_counter() + self.tick_s
            await asyncio.sleep(self.tick_s)
            self._metrics.event_loop_lag_seconds.observe(max(0.0, time.perf_counter() - expected))

    def start(self) -> None:
        """Hook the collector and start the loop probe (from a running event loop)."""
        if self._task is not None:
            return
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._probe(), name="solar-stall-monitor")

    async def stop(self) -> None:
        """Unhook and stop the probe."""
        if self._task is None:
            return
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
