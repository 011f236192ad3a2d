"""The process runtime's thread naming (Linux: the name the kernel shows)."""

from __future__ import annotations

import threading
from pathlib import Path

from service.runtime import name_os_thread


def _kernel_name(tid: int) -> str:
    return Path(f"/proc/self/task/{tid}/comm").read_text().strip()


def test_a_thread_named_for_the_kernel_shows_that_name_cut_to_15_bytes() -> None:
    seen: list[tuple[bool, str]] = []

    def run() -> None:
        named = name_os_thread("solar-a-very-long-thread-name")
        seen.append((named, _kernel_name(threading.get_native_id())))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [(True, "solar-a-very-lo")]
    assert _kernel_name(threading.get_native_id()) != "solar-a-very-lo"  # only that thread
