"""The ranker's named heads: the scoring MLP, one baseline head per baseline mode."""

from __future__ import annotations

import pytest
import torch

from model.config import RankerConfig
from model.heads import ScoringMLP
from model.layers import TargetAttention
from model.modes import BASELINE_MODES
from model.ranker import HistoryBatch, Ranker, RankerInputError, baseline_heads


def _config(mode: str) -> RankerConfig:
    return RankerConfig(n_items=30, dim=16, heads=2, rank=4, mlp_hidden=16, mode=mode)  # type: ignore[arg-type]


def test_scoring_mlp_equals_its_layers_by_name() -> None:
    torch.manual_seed(0)
    mlp = ScoringMLP(dim=8, hidden=16)
    x = torch.randn(5, 24)
    gelu = torch.nn.functional.gelu
    expected = mlp.out(gelu(mlp.fc2(gelu(mlp.fc1(x))))).squeeze(-1)
    torch.testing.assert_close(mlp(x), expected)
    torch.testing.assert_close(mlp.after_fc1(mlp.fc1(x)), expected)
    assert mlp(x).shape == (5,)


@pytest.mark.parametrize("mode", ["svd", "svd_exact", "softmax", *BASELINE_MODES])
def test_only_a_baseline_mode_owns_a_head(mode: str) -> None:
    heads = baseline_heads(_config(mode))
    assert list(heads) == ([mode] if mode in BASELINE_MODES else [])


@pytest.mark.parametrize("mode", BASELINE_MODES)
def test_a_baseline_model_answers_its_own_mode_and_refuses_another(mode: str) -> None:
    torch.manual_seed(1)
    ranker = Ranker(_config(mode)).eval()
    history = HistoryBatch(
        items=torch.randint(1, 30, (2, 7)),
        actions=torch.zeros(2, 7, dtype=torch.long),
        mask=torch.tensor([[True] * 7, [True] * 3 + [False] * 4]),
        weights=torch.ones(2, 7),
    )
    logits = ranker(torch.randint(1, 30, (2, 5)), history)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    other = next(m for m in BASELINE_MODES if m != mode)
    with pytest.raises(RankerInputError, match=f"not available for a model trained as '{mode}'"):
        ranker(torch.randint(1, 30, (2, 5)), history, mode=other)


def test_mean_head_ignores_padding_and_weights_events() -> None:
    torch.manual_seed(2)
    head = baseline_heads(_config("mean"))["mean"]
    attn = TargetAttention(16, 2)
    rows = torch.randn(1, 4, 16)
    mask = torch.tensor([[True, True, True, False]])
    weights = torch.tensor([[1.0, 3.0, 0.0, 5.0]])
    out = head(attn, torch.zeros(1, 2, 16), rows, mask, weights)  # (1, 2, 16)
    pooled = (rows[0, 0] + 3 * rows[0, 1]) / 4
    torch.testing.assert_close(out[0, 1], head.proj(pooled))
