"""The mean state: Σ w_j x_j and n_eff, incrementally, equal the training head's pooled row."""

from __future__ import annotations

import pytest
import torch

from model.heads import MeanHead
from model.state_pass import mean_outputs
from model.states import Decay
from model.states.mean import MeanState
from tests.model.states.support import blocks, events, log_weights, ranker


@pytest.mark.parametrize("half_life_s", [None, 30.0])
def test_random_blocks_equal_the_training_head(half_life_s: float | None) -> None:
    head = ranker("mean").baselines["mean"]
    assert isinstance(head, MeanHead)
    decay = Decay(half_life_s) if half_life_s else None
    rows, ts = events(61, 2)
    state = MeanState.empty(64)
    for block in blocks(61, 2):
        state = MeanState.from_bytes(state.to_bytes()).append(rows[block], ts[block], decay)
    cand = torch.randn(1, 5, 64, dtype=torch.float64)
    w = log_weights(ts, decay).exp()
    with torch.no_grad():
        expected = head(
            None,
            cand,
            torch.from_numpy(rows)[None],  # type: ignore[arg-type]
            torch.ones(1, 61, dtype=torch.bool),
            w,
        )
        got = mean_outputs(head, torch.from_numpy(state.pooled())[None], 5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert state.nbytes == 39 + 64 * 4 + 4
    assert not MeanState.empty(64).pooled().any()
