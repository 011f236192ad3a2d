"""`python -m bench.quality.train_step`: both optimisers step the study's row on the same
batches, and the fused AdamW the trainer uses makes the same update as the for-loop one."""

from __future__ import annotations

import re

import pytest

from bench.quality import train_step


def test_fused_and_for_loop_adamw_reach_the_same_loss(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--dataset", "synthetic-lifelong", "--row", "lifelong", "--users", "12"]
    assert train_step.main([*argv, "--steps", "2", "--rounds", "1"]) == 0
    rows = re.findall(
        r"^\| (for-loop|fused) AdamW \| [\d.]+ \| \d+ \| ([\d.]+) \|$",
        capsys.readouterr().out,
        re.M,
    )
    assert [name for name, _ in rows] == ["for-loop", "fused"]
    assert rows[0][1] == rows[1][1]
