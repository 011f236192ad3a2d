"""bench/e2e/applier_step.py: one side's measurement in this tree, and the table."""

from __future__ import annotations

from pathlib import Path

from bench.common import harness
from bench.e2e import applier_step


def test_one_side_times_every_block_size(tmp_path: Path) -> None:
    model = harness.random_checkpoint(tmp_path / "model", n_items=200)
    times = applier_step._run_side(harness.REPO, model, [1, 3], repeats=5)
    assert sorted(times) == [1, 3] and all(us > 0 for us in times.values())


def test_markdown_gives_per_block_and_per_event_figures() -> None:
    results = {"base": [{1: 400.0, 4: 800.0}], "this": [{1: 300.0, 4: 400.0}]}
    text = applier_step.markdown(results, [1, 4], "main", "python -m x", (1.0, 2.0))
    assert "| 1 | 400 | 300 | 300 | 0.75 |" in text
    assert "| 4 | 800 | 400 | 100 | 0.50 |" in text
