"""bench/quality/: the serving-cost calls score like the model, the targets are computed
from the table, and a quick run writes a document with every row and well-formed numbers."""

from __future__ import annotations

import importlib
import json
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


@pytest.mark.parametrize(
    ("mode", "repeat_buckets"),
    [(m, 0) for m in ("svd", "svd_exact", "elastic", "linear", "mean", "softmax", "lifelong")]
    + [("lifelong", 32)],
)
def test_cost_call_scores_like_the_model(mode: str, repeat_buckets: int) -> None:
    cost = importlib.import_module("bench.quality.cost")
    torch.manual_seed(0)
    recent = 8 if mode == "lifelong" else 0
    ranker = Ranker(
        RankerConfig(
            n_items=60,
            mode=cast(AttentionMode, mode),
            rank=8,
            elastic_tokens=4,
            recent_tokens=recent,
            repeat_buckets=repeat_buckets,
        )
    ).eval()
    items = torch.randint(1, 60, (1, 40))  # 40 draws of 59 items: repeats to count
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


def test_a_dataset_prefix_limits_a_set_field_to_that_dataset(quality: types.ModuleType) -> None:
    parser = quality._parser()
    args = parser.parse_args(["--set", "max_steps=1000", "ml-1m:max_steps=6000", "lr=0.01"])
    assert quality.train_fields("ml-1m", args.set) == {"max_steps": 6000, "lr": 0.01}
    assert quality.train_fields("complete-journey", args.set) == {"max_steps": 1000, "lr": 0.01}
    ml = quality.settings_for("ml-1m", False, quality.train_fields("ml-1m", args.set))
    assert ml.train["max_steps"] == 6000 and ml.train["batch_size"] == quality.TRAIN["batch_size"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--set", "ml-1m:=3"])


def _run(label: str, gauc: float, us: float) -> object:
    run = importlib.import_module("bench.quality.run")
    metrics = dict.fromkeys(("AUC", "GAUC", "LogLoss", "HR@10", "NDCG@10"), gauc)
    paired = importlib.import_module("bench.quality.paired")
    per_user = paired.UserAucs(("u",), np.array([gauc]), np.array([2.0]))
    return run.RunResult("d", label, 0, metrics, 10, 10, 5, 5, True, 1.0, 1.0, us, 100, per_user)


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
    # another tool's section of the old document (bench.quality.references) survives the rewrite
    (tmp_path / "RESULTS.md").write_text(
        "old\n<!-- begin:references -->\n| kept |\n<!-- end:references -->\n"
    )
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
    assert "old" not in text and "<!-- begin:references -->\n| kept |\n" in text
    assert (tmp_path / "quality_vs_cost.png").stat().st_size > 1_000
    assert "## synthetic-lifelong" in text and "Wall time:" in text
    assert text.count("**Reduced run**") == 1  # a quick run never passes for the protocol
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
    # 4 targets of the svd row, 6 of the lifelong row (5 GAUC margins and the cost)
    assert len(re.findall(r"\*\*(met|missed)\*\*", text)) == 10
    results = json.loads((tmp_path / "results.json").read_text())["datasets"]
    entry = results["synthetic-lifelong"]
    assert entry["lifelong_row"] == quality.LIFELONG_ROW == "lifelong+rep"
    assert set(entry["rows"]) == {r.label for r in quality.ROWS}
    for row in entry["rows"].values():
        assert len(row["gauc"]) == 1 and row["gauc_mean"] == row["gauc"][0]
        assert row["state_bytes"] > 0 and row["us_per_request"] > 0
    for key in ("lifelong+rep - softmax@50", "lifelong+rep - mean", "svd - softmax@all"):
        diff = entry["paired"][key]
        lo, hi = diff["ci95"]
        assert lo <= diff["mean"] <= hi and diff["users"] > 0
    a, b = entry["rows"]["lifelong+rep"], entry["rows"]["softmax@50"]
    # the paired mean over users is the difference of the rows' GAUCs
    assert entry["paired"]["lifelong+rep - softmax@50"]["mean"] == pytest.approx(
        a["gauc_mean"] - b["gauc_mean"], abs=1e-9
    )
    assert "runs stopped at a step / epoch ceiling" in text  # 4 quick steps: not converged


def test_a_journal_resumes_a_study_and_retrains_a_changed_job(
    quality: types.ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs finished before an interruption are reused for identical jobs only: the second
    study reuses its two runs and trains only the new row; a changed setting, or changed
    code under model/ or bench/quality/, trains all."""
    from bench.quality import journal as study_journal

    monkeypatch.setattr(study_journal, "code_version", lambda repo: "code-1")
    journal = tmp_path / "runs.pkl"
    argv = ["--quick", "--datasets", "synthetic-lifelong", "--workers", "1"]
    argv += ["--journal", str(journal), "--out", str(tmp_path)]
    assert quality.main([*argv, "--rows", "mean", "softmax@50"]) == 0
    first = json.loads((tmp_path / "results.json").read_text())["datasets"]
    capsys.readouterr()
    assert quality.main([*argv, "--rows", "mean", "softmax@50", "linear"]) == 0
    printed = capsys.readouterr().out
    assert "2 run(s) reused" in printed and printed.count(" seed 0 GAUC ") == 3
    assert "which reused 2 run(s) from its journal" in (tmp_path / "RESULTS.md").read_text()
    second = json.loads((tmp_path / "results.json").read_text())["datasets"]
    for label in ("mean", "softmax@50"):
        entry = second["synthetic-lifelong"]["rows"][label]
        assert entry["gauc"] == first["synthetic-lifelong"]["rows"][label]["gauc"]
    assert quality.main([*argv, "--rows", "mean", "--set", "negatives=7"]) == 0
    assert "reused" not in capsys.readouterr().out
    monkeypatch.setattr(study_journal, "code_version", lambda repo: "code-2")
    assert quality.main([*argv, "--rows", "mean", "softmax@50"]) == 0
    assert "reused" not in capsys.readouterr().out


def test_a_torn_journal_record_is_cut_off_so_later_runs_stay_readable(tmp_path: Path) -> None:
    """A crash mid-append leaves a torn last record: it is dropped and cut off the file, so
    the runs appended after it are read back; a job recorded twice is reused once."""
    from bench.quality import journal

    path = tmp_path / "runs.pkl"
    journal.append(path, "job1", "r1")  # type: ignore[arg-type]
    journal.append(path, "job2", "r2")  # type: ignore[arg-type]
    whole = path.read_bytes()
    for cut in range(len(whole) - 1, len(whole) // 2, -7):  # inside job2's record
        path.write_bytes(whole[:cut])
        assert journal.recorded(path) == [("job1", "r1")]
        journal.append(path, "job2", "r2b")  # type: ignore[arg-type]
        journal.append(path, "job1", "again")  # type: ignore[arg-type]
        assert journal.recorded(path) == [("job1", "r1"), ("job2", "r2b")]
