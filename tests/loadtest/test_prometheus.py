"""loadtest/prometheus_check.sh end to end: redis, two replicas, a real Prometheus, load.

Takes ~40 s (installs Debian's prometheus package first when it is missing, as root).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.slow
def test_prometheus_reports_a_finite_rank_p99(tiny_model_dir: Path) -> None:
    env = dict(os.environ, MODEL_DIR=str(tiny_model_dir), LOAD_S="10", RATE="30")
    run = subprocess.run(
        ["bash", str(ROOT / "loadtest" / "prometheus_check.sh")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    match = re.search(r"p99\(/rank\) = ([0-9.]+) ms", output)
    assert match is not None, output[-4000:]
    assert math.isfinite(float(match.group(1))) and float(match.group(1)) > 0
    assert "2 replicas up" in output
