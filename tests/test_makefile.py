"""The README's two commands, as make would run them (dry runs: `make -n`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(*targets: str) -> str:
    run = subprocess.run(
        ["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_first_run_model_has_a_step_budget_not_a_wall_clock_one(tmp_path: Path) -> None:
    recipe = _dry_run("model", f"MODEL_DIR={tmp_path / 'model'}")
    train = next(line for line in recipe.replace("\\\n", " ").splitlines() if "train" in line)
    steps = re.search(r"--max-steps (\d+)", train)
    assert steps is not None and 0 < int(steps.group(1)) <= 300, train  # ≤ ~60 s on 2 cores
    assert "--time-budget-s" not in train  # the default: no wall-clock budget
    assert "--seed 0" in train and "--threads 1" in train
    assert "--datasets ml-100k" in recipe  # only the dataset the model needs is fetched


def test_the_default_model_is_the_studys_winning_row(tmp_path: Path) -> None:
    from bench.quality.cli import DEFAULT_MODEL_ROW, LIFELONG_ROW, ROWS

    recipe = _dry_run("model", f"MODEL_DIR={tmp_path / 'model'}").replace("\\\n", " ")
    train = next(line for line in recipe.splitlines() if "solar train" in line)
    rows = {r.label: r for r in ROWS}
    row, winner = rows[DEFAULT_MODEL_ROW], rows[LIFELONG_ROW]
    # the winner's mode and channels; only the count buckets are sized for Redis
    assert row.mode == winner.mode and row.context == winner.context
    assert {**row.fields, "repeat_buckets": 0} == {**winner.fields, "repeat_buckets": 0}
    assert f"--mode {row.mode}" in train
    for name, value in row.fields.items():  # e.g. recent_tokens 32 → --recent-tokens 32
        assert f"--{name.replace('_', '-')} {value}" in train, (name, train)
    assert "--svd-readout" in train  # and the svd family from the same state


def test_run_trains_once_then_serves(tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert "solar train" in _dry_run("run", f"MODEL_DIR={model}")
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"")
    served = _dry_run("run", f"MODEL_DIR={model}")
    assert "solar train" not in served and f"SOLAR_MODEL_PATH={model}" in served
    assert "solar serve" in served
