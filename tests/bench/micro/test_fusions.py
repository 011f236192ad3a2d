"""bench.micro.fusions, tiny grid (eager only): every variant timed, equal logits, its section."""

from __future__ import annotations

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
