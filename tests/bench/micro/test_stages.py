"""bench/micro/stages.py end to end on a small grid: a private Redis, the service's own stages, the
roofline columns, and only its own section of the markdown file rewritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.micro import stages

pytestmark = pytest.mark.e2e


def test_quick_profile_writes_its_section(tmp_path: Path) -> None:
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\nprose kept\n")
    out = tmp_path / "stages.json"
    argv = [
        "--quick",
        "--no-http",
        "--budget-s",
        "0.02",
        "--markdown",
        str(markdown),
        "--json",
        str(out),
    ]
    assert stages.main(argv) == 0
    text = markdown.read_text()
    assert text.startswith("# Benchmarks\n\nprose kept\n")
    assert "<!-- begin:stages -->" in text and "| 2,048 | 8 |" in text
    document = json.loads(out.read_text())
    rows = document["rows"]
    assert [(r["m"], r["b"]) for r in rows] == [(512, 1), (512, 8), (2_048, 1), (2_048, 8)]
    for row in rows:
        assert set(row["stage_ms"]) == set(stages.STAGES)
        # A stage may round to 0 ms on the fast path (validation of a valid body); none is
        # negative, and the measured ones add up to something.
        assert all(v >= 0 for v in row["stage_ms"].values()), row
        assert sum(row["stage_ms"].values()) > 0, row
        assert row["gemm_gflops"] > 1 and row["mflop_per_request"] > 30
