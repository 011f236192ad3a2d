"""bench/quality/: the serving-cost calls score like the model, the targets are computed
from the table, and a quick run writes a document with every row and well-formed numbers."""

from __future__ import annotations

import importlib
import re
import types
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch

from model.config import AttentionMode, RankerConfig
from model.lifelong import LifelongConfig, generate_lifelong
from model.ranker import HistoryBatch, Ranker


@pytest.fixture(scope="module")
def quality() -> types.ModuleType:
    return importlib.import_module("bench.quality.cli")


@pytest.mark.parametrize("mode", ["svd", "svd_exact", "elastic", "linear", "mean", "softmax"])
def test_cost_call_scores_like_the_model(mode: str) -> None:
    cost = importlib.import_module("bench.quality.cost")
    torch.manual_seed(0)
    ranker = Ranker(
        RankerConfig(n_items=60, mode=cast(AttentionMode, mode), rank=8, elastic_tokens=4)
    ).eval()
    items = torch.randint(1, 60, (1, 40))
    hist = HistoryBatch(
        items, torch.zeros_like(items), torch.ones(1, 40, dtype=torch.bool), torch.ones(1, 40)
    )
    rows = torch.randint(1, 60, (1, 24))
    with torch.inference_mode():
        call = cost.request(ranker, mode, hist, rows)
        got = call.logits().clone()
        want = ranker(rows, hist, mode)
    assert got.shape == (1, 24)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert call.state_bytes > 0


def test_a_mode_without_a_cost_call_costs_nan() -> None:
    cost = importlib.import_module("bench.quality.cost")
    doc = importlib.import_module("bench.quality.doc")
    ranker = Ranker(RankerConfig(n_items=60)).eval()
    tiny = LifelongConfig(
        n_users=2, n_items=60, n_topics=6, long_interests=2, min_length=30, max_length=40
    )
    data = generate_lifelong(tiny)
    with pytest.raises(cost.NoServingCost, match="hybrid"):
        cost.request(ranker, "hybrid", cost._history(data.interactions, 0, 10), torch.ones(1, 3))
    got = cost.serving_cost(ranker, "hybrid", data.interactions, 10, budget_s=0.0)
    assert np.isnan(got.us_per_request) and got.state_bytes == 0
    assert doc._number(got.us_per_request) == "n/a" and doc._number(1234.4) == "1,234"


def test_state_sizes() -> None:
    cost = importlib.import_module("bench.quality.cost")
    torch.manual_seed(0)
    items = torch.randint(1, 60, (1, 300))
    hist = HistoryBatch(
        items, torch.zeros_like(items), torch.ones(1, 300, dtype=torch.bool), torch.ones(1, 300)
    )
    rows = torch.randint(1, 60, (1, 8))
    sizes = {}
    for mode in ("svd", "softmax", "mean", "linear", "elastic"):
        ranker = Ranker(RankerConfig(n_items=60, mode=cast(AttentionMode, mode))).eval()
        with torch.inference_mode():
            sizes[mode] = cost.request(ranker, mode, hist, rows).state_bytes
    assert sizes["softmax"] == 300 * cost.EVENT_BYTES
    assert sizes["mean"] == cost.HEADER_BYTES + 4 * 65
    assert sizes["linear"] == cost.HEADER_BYTES + 4 * 4 * (16 * 16 + 16)
    assert sizes["elastic"] == cost.HEADER_BYTES + 4 * 32 * 4 * 18
    assert 4 * 48 * 65 < sizes["svd"] <= 16 * 1024  # σ, V (ℓ = 48), s, header: ≤ 16 KB


def test_settings_reach_the_configs(quality: types.ModuleType) -> None:
    setup = importlib.import_module("bench.quality.setup")
    row = setup.Row("svd-hl", "svd", None, {"half_life_s": 60.0, "lr": 1e-3})
    job = setup.Job("ml-100k", quality.SETTINGS["ml-100k"], row, seed=5)
    cfg = setup.train_config(job, 123)
    batch = quality.TRAIN["batch_size"]
    assert (cfg.lr, cfg.max_len, cfg.seed, cfg.batch_size) == (1e-3, 123, 5, batch)
    fake = types.SimpleNamespace(vocab=types.SimpleNamespace(n_items=10, n_actions=2))
    model = setup.model_config(job, fake)
    assert (model.mode, model.half_life_s, model.n_items) == ("svd", 60.0, 10)
    labels = [r.label for r in quality.ROWS]
    assert len(set(labels)) == len(labels)
    assert {"svd", "elastic", "linear", "mean", "softmax@50", "softmax@200", "softmax@all"} <= set(
        labels
    )


def _run(label: str, gauc: float, us: float) -> object:
    run = importlib.import_module("bench.quality.run")
    metrics = dict.fromkeys(("AUC", "GAUC", "LogLoss", "HR@10", "NDCG@10"), gauc)
    return run.RunResult("d", label, 0, metrics, 10, 10, 5, 5, True, 1.0, 1.0, us, 100)


def test_targets_follow_the_table(quality: types.ModuleType) -> None:
    doc = importlib.import_module("bench.quality.doc")
    runs = [
        _run("svd", 0.80, 100.0),
        _run("softmax@200", 0.79, 400.0),
        _run("softmax@all", 0.802, 2_500.0),
        _run("mean", 0.797, 50.0),
        _run("linear", 0.70, 80.0),
    ]
    lines = doc.targets(doc.summarise(quality.ROWS, runs))
    assert len(lines) == 4
    assert "**met**" in lines[0] and "+0.0100" in lines[0]
    assert "**met**" in lines[1] and "+0.0020" in lines[1]
    assert "**missed**" in lines[2] and "svd − mean = +0.0030" in lines[2]
    assert "**met**" in lines[3] and "25.0×" in lines[3]


NUMBER = r"\d+\.\d{4} ± \d+\.\d{4}"


def test_quick_run_documents_every_row(quality: types.ModuleType, tmp_path: Path) -> None:
    assert (
        quality.main(
            [
                "--quick",
                "--datasets",
                "synthetic-lifelong",
                "--workers",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    text = (tmp_path / "RESULTS.md").read_text()
    assert (tmp_path / "quality_vs_cost.png").stat().st_size > 1_000
    assert "## synthetic-lifelong" in text and "Wall time:" in text
    table = [line for line in text.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in table] == [r.label for r in quality.ROWS]
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 12, line
        assert all(re.fullmatch(NUMBER, c) for c in cells[2:7]), line
        auc, gauc = (float(c.split(" ± ")[0]) for c in cells[2:4])
        assert 0.0 <= auc <= 1.0 and 0.0 <= gauc <= 1.0
        assert all(float(c.replace(",", "")) > 0 for c in cells[7:10]), line
        assert np.isfinite(float(cells[4].split(" ± ")[0]))
    assert len(re.findall(r"\*\*(met|missed)\*\*", text)) == 4
    assert "runs stopped at a step / epoch ceiling" in text  # 4 quick steps: not converged
