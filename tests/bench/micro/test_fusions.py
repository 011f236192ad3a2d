"""bench.micro.fusions, tiny grid (eager only): every variant timed, equal logits, its section."""

from __future__ import annotations

import time
from pathlib import Path

from bench.micro import fusions


def test_eager_variants_agree_and_are_timed(tmp_path: Path) -> None:
    markdown = tmp_path / "BENCHMARKS.md"
    argv = [
        "--m",
        "64",
        "--batches",
        "1,2",
        "--rounds",
        "1",
        "--budget-s",
        "0.01",
        "--no-compile",
        "--markdown",
        str(markdown),
    ]
    assert fusions.main(argv) == 0
    rows = [
        line.split("|") for line in markdown.read_text().splitlines() if line.startswith("| 64 |")
    ]
    assert len(rows) == 2
    for cells in rows:
        plain, fused, delta = float(cells[3]), float(cells[4]), float(cells[7])
        assert plain > 0 and fused > 0
        assert delta <= 1e-5  # the fused pass computes the plain pass's logits
        assert float(cells[8]) > 0 and float(cells[9]) > 0  # beside Python: plain, fused


def test_the_busy_thread_runs_python_while_active() -> None:
    with fusions.BusyPython() as busy:
        deadline = time.monotonic() + 5.0
        while busy.decodes < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    seen = busy.decodes
    assert seen >= 3
    time.sleep(0.05)
    assert busy.decodes == seen  # stopped on leaving
