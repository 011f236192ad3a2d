"""bench/e2e/stalls.py's per-thread figures, read from this process's own /proc entries."""

from __future__ import annotations

import os
import threading

from bench.e2e import stalls
from service.runtime import name_os_thread


def _busy(seconds: float) -> None:
    end = stalls.cpu_s(os.getpid()) + seconds
    while stalls.cpu_s(os.getpid()) < end:
        sum(range(1_000))


def test_a_named_batch_thread_is_counted_apart_from_the_loop() -> None:
    before = stalls.thread_times(os.getpid())
    started, release = threading.Event(), threading.Event()

    def batch() -> None:
        name_os_thread("solar-batch-0")
        _busy(0.05)
        started.set()
        release.wait()

    thread = threading.Thread(target=batch)
    thread.start()
    try:
        started.wait()
        after = stalls.thread_times(os.getpid())
    finally:
        release.set()
        thread.join()
    assert after["batch"].cpu_s >= 0.04  # this thread's work, not the main thread's
    assert after["loop"].cpu_s >= before["loop"].cpu_s
    line = stalls.thread_line(before, after, seconds=1.0, ranks=10)
    assert line.startswith("serve threads: loop ") and ", batch " in line
    assert "ms per /rank" in line
