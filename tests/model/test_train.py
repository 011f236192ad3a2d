"""Training: a tiny run beats random ranking, is deterministic, and round-trips a checkpoint."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import RankerConfig
from model.evaluate import EvalSpec, evaluate
from model.events.interactions import Interactions
from model.ranker import Ranker
from model.synthetic import SyntheticConfig, generate
from model.train import BestValidation, NegativeSampler, TrainConfig, main, train

TINY = SyntheticConfig(
    n_users=40, n_items=400, n_topics=20, interests=2, min_length=150, max_length=200, seed=3
)
FAST = TrainConfig(epochs=3, batch_size=128, max_len=40, val_users=40, progress=False)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # intra-op threads spin-wait badly on a shared 2-core host
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> Interactions:
    return generate(TINY).interactions


def _model_cfg(data: Interactions, mode: str = "svd") -> RankerConfig:
    return RankerConfig(n_items=data.vocab.n_items, n_actions=data.vocab.n_actions, mode=mode)


def test_tiny_training_beats_random(data: Interactions) -> None:
    result = train(_model_cfg(data), data, FAST)
    spec = EvalSpec(negatives=200, max_len=40)
    m = evaluate(result.ranker, data, "svd", spec)
    assert m.users == 40
    assert m.auc > 0.7, m  # random ranking: 0.5
    assert m.hr_at_10 > 3 * 10 / 201, m  # random: 0.05
    assert len(result.val_gauc) >= 1 and 0 <= result.best_step <= result.steps


def test_training_is_deterministic(data: Interactions) -> None:
    cfg = TrainConfig(epochs=1, batch_size=256, max_len=20, val_users=10, progress=False)
    a = train(_model_cfg(data, "mean"), data, cfg).ranker.state_dict()
    b = train(_model_cfg(data, "mean"), data, cfg).ranker.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_every_n_steps_and_early_stopping_keep_the_best(data: Interactions) -> None:
    cfg = TrainConfig(
        epochs=20,
        batch_size=64,
        max_len=20,
        val_users=20,
        eval_every=3,
        max_steps=12,
        lr=0.0,
        patience=2,
        progress=False,
    )
    result = train(_model_cfg(data, "mean"), data, cfg)
    # lr 0: every validation scores the initial weights, so none improves on the first and
    # training stops after patience=2 more validations (at steps 3, 6, 9).
    assert result.steps == 9 and len(result.val_gauc) == 3, result
    assert result.best_step == 3 and result.contexts_per_s > 0
    longer = train(_model_cfg(data, "mean"), data, dataclasses.replace(cfg, lr=3e-3, patience=9))
    assert longer.steps == 12 and len(longer.val_gauc) == 4
    assert longer.best_step in (3, 6, 9, 12)
    assert max(longer.val_gauc) == longer.val_gauc[longer.best_step // 3 - 1]


def test_popularity_sampler_prefers_popular_items(data: Interactions) -> None:
    draws = NegativeSampler(data, "popularity", np.random.default_rng(0))((200, 50))
    counts = np.bincount(data.items, minlength=data.vocab.n_items)
    assert draws.min() >= 1 and draws.max() < data.vocab.n_items
    assert counts[draws].mean() > 2 * counts[1:].mean()
    with pytest.raises(ValueError, match="sampling"):
        NegativeSampler(data, "random", np.random.default_rng(0))


def test_checkpoint_round_trip(tmp_path: Path, data: Interactions) -> None:
    cfg = TrainConfig(epochs=1, max_len=20, val_users=10, progress=False)
    ranker = train(_model_cfg(data), data, cfg).ranker
    save_checkpoint(tmp_path / "m", ranker, data.vocab, {"max_len": 20})
    loaded = load_checkpoint(tmp_path / "m")
    spec = EvalSpec(negatives=50, max_len=20, max_users=10)
    assert evaluate(loaded.ranker, data, "svd", spec) == evaluate(ranker, data, "svd", spec)
    assert loaded.vocab == data.vocab and loaded.meta["max_len"] == 20


def test_cli_trains_from_a_file(tmp_path: Path, data: Interactions) -> None:
    lines = ["user_id\titem_id\ttimestamp"]
    for u in range(10):
        for e in range(int(data.offsets[u]), int(data.offsets[u]) + 30):
            lines.append(f"{data.users[u]}\t{data.vocab.items[data.items[e] - 1]}\t{data.ts[e]}")
    path = tmp_path / "log.tsv"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ckpt"
    argv = ["--dataset", str(path), "--out", str(out), "--epochs", "1", "--mode", "softmax"]
    assert main([*argv, "--device", "cpu", "--max-len", "10"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.ranker.config.mode == "softmax" and ckpt.meta["dataset"] == str(path)
    assert main(["--dataset", str(tmp_path / "absent.tsv"), "--out", str(out)]) == 1
    lifelong = ["--mode", "lifelong", "--recent-tokens", "4", "--repeat-buckets", "64"]
    argv = ["--dataset", str(path), "--out", str(out), "--epochs", "1", *lifelong]
    assert main([*argv, "--device", "cpu", "--max-len", "10"]) == 0
    config = load_checkpoint(out).ranker.config
    assert (config.mode, config.recent_tokens, config.repeat_buckets) == ("lifelong", 4, 64)


def test_an_svd_readout_learns_and_leaves_the_lifelong_model_as_it_was(
    data: Interactions,
) -> None:
    lifelong = RankerConfig(
        n_items=data.vocab.n_items,
        n_actions=data.vocab.n_actions,
        dim=32,
        rank=8,
        mode="lifelong",
        recent_tokens=4,
        repeat_buckets=64,
    )
    cfg = dataclasses.replace(FAST, max_steps=40)
    torch.manual_seed(0)
    plain = train(lifelong, data, cfg).ranker
    torch.manual_seed(0)
    both = train(dataclasses.replace(lifelong, svd_readout=True), data, cfg).ranker
    assert plain.readout is None and both.readout is not None
    readout = {k for k in both.state_dict() if k.startswith("readout.")}
    assert readout and set(both.state_dict()) - readout == set(plain.state_dict())
    for name, weight in plain.state_dict().items():  # the read-out's loss moved none of them
        assert torch.equal(weight, both.state_dict()[name]), name
    assert both.served_modes() == ("svd", "svd_exact", "softmax", "lifelong")
    spec = EvalSpec(negatives=200, max_len=40)
    untrained = Ranker(dataclasses.replace(lifelong, svd_readout=True))
    untrained.load_state_dict({**untrained.state_dict(), **plain.state_dict()})
    trained_auc = evaluate(both, data, "svd", spec).auc
    assert trained_auc > evaluate(untrained, data, "svd", spec).auc + 0.05  # it learned
    assert trained_auc > 0.7


def _shop_log(path: Path, data: Interactions, users: int = 10, events: int = 30) -> Path:
    """The first users of ``data`` as a shop's export: other column names, ISO 8601 times."""
    lines = ["customer_id,sku,event_time,kind"]
    for u in range(users):
        for e in range(int(data.offsets[u]), int(data.offsets[u]) + events):
            when = datetime.fromtimestamp(1.7e9 + float(data.ts[e]), tz=timezone.utc)
            item = data.vocab.items[data.items[e] - 1]
            lines.append(f"{data.users[u]},sku-{item},{when.isoformat()},view")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_trains_and_evaluates_a_log_with_other_column_names(
    tmp_path: Path, data: Interactions, caplog: pytest.LogCaptureFixture
) -> None:
    from model.evaluate import main as eval_main

    path = _shop_log(tmp_path / "shop.csv", data)
    columns = ["--columns", "user=customer_id,item=sku,ts=event_time,action=kind"]
    out = tmp_path / "ckpt"
    argv = ["--dataset", str(path), "--out", str(out), "--max-steps", "5", "--max-len", "10"]
    assert main([*argv, *columns, "--device", "cpu"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.vocab.items[0].startswith("sku-") and ckpt.vocab.actions == ("view",)
    assert (
        eval_main(
            [
                "--checkpoint",
                str(out),
                "--dataset",
                str(path),
                *columns,
                "--negatives",
                "20",
                "--json",
            ]
        )
        == 0
    )
    assert main([*argv, "--columns", "user=customer_id,item=product,ts=event_time"]) == 1
    assert "no column 'product'" in caplog.text and str(path) in caplog.text
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--columns", "buyer=customer_id"])
    assert exc.value.code == 2


def test_a_step_budget_trains_the_same_model_twice(tmp_path: Path, data: Interactions) -> None:
    path = _shop_log(tmp_path / "shop.csv", data, users=20)
    argv = [
        "--dataset",
        str(path),
        "--columns",
        "user=customer_id,item=sku,ts=event_time",
        "--max-steps",
        "6",
        "--batch-size",
        "32",
        "--max-len",
        "10",
    ]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a.version == b.version and a.meta["train"]["max_steps"] == 6
    assert a.meta["train"]["time_budget_s"] is None  # no wall clock unless asked for


def test_early_stopping_on_a_smoothed_signal_with_patience_in_steps() -> None:
    """One noisy spike neither picks the weights (EMA α = 0.5) nor resets the step patience."""
    ranker = Ranker(RankerConfig(n_items=4))
    cfg = TrainConfig(patience_steps=100, val_smoothing=0.5, progress=False)
    record = BestValidation(ranker.state_dict(), cfg.val_smoothing)
    for step, gauc in ((40, 0.60), (80, 0.70), (120, 0.90), (160, 0.60), (200, 0.60)):
        record.validated(gauc, step, ranker)
        assert not record.should_stop(cfg)
    # raw best: the spike at 120; smoothed: 0.60, 0.65, 0.775, 0.6875, 0.64 → best at 120 too
    assert record.best_step == 120
    record.validated(0.60, 220, ranker)  # 100 steps after the best: patience exhausted
    assert record.should_stop(cfg)
    gaucs = (0.70, 0.90, 0.72, 0.80, 0.80, 0.80, 0.80)  # a spike at step 80, then a plateau
    spiky, raw_record = BestValidation(ranker.state_dict(), 0.6), BestValidation({})
    for i, gauc in enumerate(gaucs):
        spiky.validated(gauc, 40 * (i + 1), ranker)
        raw_record.validated(gauc, 40 * (i + 1), ranker)
    # smoothed: .70, .78, .756, .7736, .7842, .7905, .7943: the plateau wins, not the spike
    assert spiky.best_step == 280 and raw_record.best_step == 80
    raw = BestValidation(ranker.state_dict())
    for step, gauc in ((40, 0.70), (80, 0.75), (120, 0.74)):
        raw.validated(gauc, step, ranker)
    assert raw.best_step == 80 and raw.should_stop(TrainConfig(patience=1))
    with pytest.raises(ValueError, match="val_smoothing"):
        BestValidation(ranker.state_dict(), 1.0)
