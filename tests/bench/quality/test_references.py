"""bench/quality/references.py: the counting references score what they claim to count, on the
study's own split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bench.quality.references import (
    REFERENCES,
    TransitionCounts,
    markdown,
    reference_scorers,
    training_events,
)
from model.evaluate import EvalSpec, score_with
from model.events.interactions import Interactions
from model.metrics import ranking_metrics
from model.ranker import HistoryBatch
from model.vocabulary import Vocabulary

N_ITEMS = 10  # rows 1..9


def _data() -> Interactions:
    """Four users who all go 1 → 2 → 3 (user 3 then buys 5 twice); the last event is each
    user's test target."""
    per_user = [[1, 2, 3], [1, 2, 3], [4, 1, 2, 3], [5, 5, 1, 2, 3]]
    items = np.concatenate([np.array(u) for u in per_user])
    offsets = np.cumsum([0, *map(len, per_user)])
    return Interactions(
        users=tuple("abcd"),
        offsets=offsets.astype(np.int64),
        items=items.astype(np.int64),
        actions=np.zeros(items.size, dtype=np.int64),
        ts=np.arange(items.size, dtype=np.float64),
        vocab=Vocabulary(tuple(str(i) for i in range(1, N_ITEMS))),
    )


def _history(rows: list[list[int]]) -> HistoryBatch:
    width = max(map(len, rows))
    items = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = items > 0
    return HistoryBatch(items, torch.zeros_like(items), mask, mask.float())


def test_counts_leave_the_test_targets_out() -> None:
    data = _data()
    keep = training_events(data)
    assert data.items[~keep].tolist() == [3, 3, 3, 3]  # each user's last event
    counts = TransitionCounts(data, keep)
    one = slice(counts.starts[1], counts.starts[2])  # source item 1
    # 1 → 2 at lag 1 (4 users); 1 → 3 at lag 2 never counts: every 3 is a test target
    assert counts.targets[one].tolist() == [2] and counts.weights[one].tolist() == [4.0]
    five = slice(counts.starts[5], counts.starts[6])
    pairs = zip(counts.targets[five].tolist(), counts.weights[five].tolist(), strict=True)
    assert dict(pairs) == {
        5: 1.0,  # 5 → 5 at lag 1
        1: 1.0 + 0.5,  # lag 1 and lag 2
        2: 0.5 + 1.0 / 3.0,  # lag 2 and lag 3
    }


def test_each_reference_ranks_what_it_counts_first() -> None:
    scorers = reference_scorers(_data())
    cands = torch.tensor([[1, 2, 4, 5]])
    # popularity over the training events: 1 and 2 (4 each) > 5 (2) > 4 (1)
    assert scorers["popularity"](cands, _history([[9]])).argsort(descending=True)[0].tolist() == [
        0,
        1,
        3,
        2,
    ]
    repeats = scorers["repeats"](cands, _history([[4, 5, 5]]))[0]
    assert repeats.argmax().item() == 3 and repeats[2] > repeats[0]  # 5 twice, 4 once, 1 never
    after_one = scorers["transitions"](cands, _history([[4, 1]]))[0]
    assert after_one.argmax().item() == 1  # 2 follows 1


def test_references_score_on_the_evaluation_split() -> None:
    data = _data()
    spec = EvalSpec(max_len=10)
    scorers = reference_scorers(data)
    positives, negatives = score_with(scorers["transitions"], data, spec)
    # the catalogue (9 items) minus what the user saw and the target
    assert [n.size for n in negatives] == [6, 6, 5, 5] and positives.size == 4
    # nothing ever led to 3 in training (every 3 is a test target): transitions cannot tell
    # it from the other unseen items beyond popularity, which never counted 3 either
    assert ranking_metrics(positives, negatives).gauc < 0.5


def test_the_table_sets_the_references_beside_the_study_rows(tmp_path: Path) -> None:
    metrics = ranking_metrics(np.array([1.0, 0.0]), [np.array([0.5]), np.array([0.5])])
    results = tmp_path / "results.json"
    row = {"gauc": [0.81, 0.9], "ndcg10_mean": 0.05}
    results.write_text(json.dumps({"datasets": {"d": {"rows": {"lifelong+rep": row}}}}))
    found = {"d": dict.fromkeys(REFERENCES, metrics), "e": dict.fromkeys(REFERENCES, metrics)}
    lines = markdown(found, results, "cmd").splitlines()
    d_row = next(line for line in lines if line.startswith("| d |"))
    assert d_row.split(" | ")[1:5] == ["0.5000", "0.5000", "0.5000", "0.8100"]  # seed 0's GAUC
    ndcg = f"{metrics.ndcg_at_10:.4f}"
    assert d_row.endswith(f"| – | – | {ndcg} / 0.0500 |")  # rows the study did not run
    assert next(line for line in lines if line.startswith("| e |")).endswith(f"– | {ndcg} / – |")
