"""Leave-last-out evaluation: candidate sets, splits and the `solar eval` CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import save_checkpoint
from model.config import RankerConfig
from model.evaluate import EvalSpec, eval_users, evaluate, main, score_split
from model.events.interactions import Interactions
from model.ranker import Ranker
from model.vocabulary import Vocabulary

N_ITEMS = 30


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data() -> Interactions:
    # User 0: items 1..6; user 1: items 3, 3, 9 (a repeat); user 2: two events (not evaluated).
    items = np.array([1, 2, 3, 4, 5, 6, 3, 3, 9, 7, 8])
    return Interactions(
        users=("a", "b", "c"),
        offsets=np.array([0, 6, 9, 11], dtype=np.int64),
        items=items.astype(np.int64),
        actions=np.zeros(items.size, dtype=np.int64),
        ts=np.arange(items.size, dtype=np.float64),
        vocab=Vocabulary(tuple(str(i) for i in range(1, N_ITEMS + 1))),
    )


def _ranker() -> Ranker:
    torch.manual_seed(0)
    return Ranker(RankerConfig(n_items=N_ITEMS + 1, mode="svd")).eval()


def test_only_users_with_three_events_are_evaluated() -> None:
    assert eval_users(_data(), EvalSpec()).tolist() == [0, 1]
    assert eval_users(_data(), EvalSpec(max_users=1)).size == 1


def test_catalogue_minus_seen_items() -> None:
    pos, negs = score_split(_ranker(), _data(), "svd", EvalSpec())
    # User 0 (test target 6, saw 1..5): 30 - 5 seen - target = 24 negatives.
    # User 1 (target 9, saw 3): 28 negatives.
    assert [n.size for n in negs] == [24, 28]
    _, negs_valid = score_split(_ranker(), _data(), "svd", EvalSpec(split="valid"))
    # Validation target of user 0 is item 5 (saw 1..4); user 1's is 3 (saw 3 before: excluded).
    assert [n.size for n in negs_valid] == [25, 29]
    assert pos.shape == (2,)


def test_target_score_is_the_models_score() -> None:
    data, ranker = _data(), _ranker()
    pos, _ = score_split(ranker, data, "softmax", EvalSpec())
    from model.events.windows import history_batch

    hist = history_batch(data, np.array([0]), np.array([5]), 100)
    with torch.no_grad():
        direct = ranker(torch.tensor([[6]]), hist, "softmax")
    assert pos[0] == pytest.approx(float(direct[0, 0]), abs=1e-5)


def test_sampled_negatives_exclude_the_target() -> None:
    data = _data()
    spec = EvalSpec(negatives=10)
    _, negs = score_split(_ranker(), data, "svd", spec)
    assert [n.size for n in negs] == [10, 10]
    m = evaluate(_ranker(), data, "svd", spec)
    assert 0.0 <= m.auc <= 1.0 and m.users == 2


def test_cli_prints_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _data()
    lines = ["user_id\titem_id\ttimestamp"]
    for u in range(data.n_users):
        for e in range(int(data.offsets[u]), int(data.offsets[u + 1])):
            lines.append(f"{data.users[u]}\t{data.items[e]}\t{data.ts[e]}")
    log_path = tmp_path / "log.tsv"
    log_path.write_text("\n".join(lines) + "\n")
    ranker = _ranker()
    save_checkpoint(tmp_path / "m", ranker, data.vocab, {"max_len": 10})
    argv = ["--checkpoint", str(tmp_path / "m"), "--dataset", str(log_path)]
    assert main([*argv, "--modes", "svd", "softmax", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"svd", "softmax"} and 0 <= result["svd"]["AUC"] <= 1
