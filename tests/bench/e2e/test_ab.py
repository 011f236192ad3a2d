"""bench/e2e/ab.py's pure parts: exporting a revision's tree, the table of both sides."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.e2e import ab


def test_export_holds_the_revision_tree(tmp_path: Path) -> None:
    tree = ab.export("HEAD", tmp_path / "tree")
    assert (tree / "service" / "cli.py").is_file() and (tree / "pyproject.toml").is_file()
    assert not (tree / ".git").exists()


def test_markdown_shows_the_median_and_every_round() -> None:
    rounds = [dict.fromkeys(ab.FIGURES, v) for v in (3.0, 1.0, 2.0)]
    args = argparse.Namespace(base="main", users=2, events=10, m=64, concurrency=4)
    text = ab.markdown({"base": rounds, "this": rounds[:1]}, args, "python -m bench.e2e.ab", 0.5)
    assert "| `main` | 2.0 (3.0, 1.0, 2.0) |" in text
    assert "| this branch | 3.0 (3.0) |" in text
