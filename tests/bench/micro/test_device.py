"""bench/micro/device.py on a tiny grid: points for every (M, B), its section of the markdown."""

from __future__ import annotations

from pathlib import Path

from bench.micro import device


def test_quick_run_writes_its_section(tmp_path: Path) -> None:
    markdown = tmp_path / "BENCHMARKS.md"
    argv = [
        "--devices",
        "cpu",
        "--ms",
        "64,128",
        "--batches",
        "1,4",
        "--seconds",
        "0.05",
        "--markdown",
        str(markdown),
    ]
    assert device.main(argv) == 0
    text = markdown.read_text()
    assert "<!-- begin:device -->" in text
    rows = [line for line in text.splitlines() if line.startswith("| cpu | float32 |")]
    assert len(rows) == 4 and "| cpu | float32 | 128 | 4 |" in text
    for row in rows:
        rate = float(row.split("|")[5].replace(",", ""))
        assert rate > 0
