"""bench.micro.state_modes: every mode measured in one run, ratios to softmax, the size verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.micro import state_modes
from bench.micro.state_modes import MODES, ModeRow, measure, table


def test_table_reports_ratios_to_softmax_and_the_size_target() -> None:
    rows = [ModeRow("elastic", 9_282, 10.0, 2.0, 500.0), ModeRow("softmax", None, None, None, 5e4)]
    text = "\n".join(table(rows))
    assert "| `elastic` | 9,282 | 10.0 | 2.0 | 500 | 100.0× |" in text
    assert "| `softmax` | — | — | — | 50,000 | 1.0× |" in text
    assert text.endswith("met")
    life = [
        ModeRow("lifelong", 29_693, 1.0, 1.0, 400.0),
        ModeRow("softmax", None, None, None, 5e4),
        ModeRow("softmax@200", None, None, None, 500.0),
    ]
    text = "\n".join(table(life))
    assert "state ≤ 16,384 B: met" in text  # lifelong's three channels are not one state
    assert text.endswith(
        "costs 400 µs per request against 500 for `softmax@200` (target: no more): met"
    )
    too_big = [ModeRow("svd", 20_000, 1.0, 1.0, 1.0), ModeRow("softmax", None, None, None, 1.0)]
    assert "\n".join(table(too_big)).endswith("MISSED")


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_measured(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_modes, "N", 300)
    monkeypatch.setattr(state_modes, "M", 64)
    row = measure(mode, repeats=1, append_events=32, rng=np.random.default_rng(0))
    assert row.mode == mode and row.score_us > 0
    if mode in ("softmax", "svd_exact", "softmax@200"):
        assert row.state_bytes is None and row.append_us is None
    else:
        limit = 64 * 1024 if mode == "lifelong" else 16 * 1024  # lifelong: three channels
        assert row.state_bytes is not None and 0 < row.state_bytes <= limit
        assert row.append_us is not None and row.block16_us is not None
        assert row.append_us > 0 and row.block16_us > 0


def test_main_writes_its_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_modes, "N", 200)
    monkeypatch.setattr(state_modes, "M", 32)
    path = tmp_path / "B.md"
    path.write_text("# Benchmarks\n\nother figures\n")
    assert state_modes.main(["--quick", "--markdown", str(path)]) == 0
    text = path.read_text()
    assert "other figures" in text and "<!-- begin:state-modes -->" in text
    assert all(f"| `{mode}` |" in text for mode in MODES)
    assert "`python -m bench.micro.state_modes --quick --markdown" in text
