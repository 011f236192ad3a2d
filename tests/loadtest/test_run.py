"""loadtest/run.sh end to end (short): private redis + service, seeding, locust, summary."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.slow
def test_run_sh_writes_summary_and_stops_everything(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = dict(
        os.environ,
        MODEL_DIR=str(tiny_model_dir),
        OUT=str(out),
        DURATION="6",
        RATE="20",
        USERS="4",
        SEED_USERS="3",
        HISTORY="300",
        CANDIDATES="256",
    )
    run = subprocess.run(
        ["bash", str(ROOT / "loadtest" / "run.sh")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    rank = summary["endpoints"]["/rank"]
    assert rank["requests"] > 20 and rank["failures"] == 0 and rank["p99_ms"] > 0
    assert summary["config"]["mode"] == "svd" and summary["config"]["candidates"] == 256
    assert (out / "summary-svd.json").is_file() and (out / "report.html").is_file()
    assert (out / "locust_stats.csv").is_file()
    # Everything it started is gone: the service log ends with uvicorn's shutdown.
    assert "Finished server process" in (out / "service.log").read_text()
