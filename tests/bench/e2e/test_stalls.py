"""bench/e2e/stalls.py's per-thread figures, read from this process's own /proc entries."""

from __future__ import annotations

import os
import threading
import time

from bench.e2e import stalls
from service.runtime import name_os_thread


def test_a_named_batch_thread_is_counted_apart_from_the_loop() -> None:
    before = stalls.thread_times(os.getpid())
    named, started, release = [], threading.Event(), threading.Event()

    def batch() -> None:
        named.append(name_os_thread("solar-batch-0"))
        end = time.thread_time() + 0.05  # this thread's own CPU
        while time.thread_time() < end:
            sum(range(1_000))
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
    assert named == [True]
    used = stalls.group_deltas(before, after)
    assert 0.04 <= used["batch"].cpu_s < 1.0  # that thread's work since `before`, no more
    line = stalls.thread_line(before, after, seconds=1.0, ranks=10)
    assert line.startswith("serve threads: loop ") and ", batch " in line
    assert f"batch CPU {100 * used['batch'].cpu_s:.2f} ms per /rank" in line


def test_a_thread_seen_twice_counts_its_difference_only() -> None:
    first = stalls.ThreadTimes(cpu_s=2.0, wait_s=1.0, switches=10)
    later = stalls.ThreadTimes(cpu_s=2.5, wait_s=1.25, switches=14)
    before = {1: ("loop", first), 2: ("other", first)}
    after = {1: ("loop", later), 3: ("batch", later)}  # 2 ended, 3 started in between
    used = stalls.group_deltas(before, after)
    assert used == {
        "loop": stalls.ThreadTimes(0.5, 0.25, 4),
        "batch": later,
    }
