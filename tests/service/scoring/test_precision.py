"""The serving dtype: bfloat16 only when it keeps logits within the tolerance of float32."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.config import RankerConfig
from model.ranker import Ranker
from service.scoring.precision import choose_dtype, max_bf16_error

CONFIG = RankerConfig(n_items=300, n_actions=3, dim=32, heads=4, rank=8, mlp_hidden=32)


@pytest.fixture(scope="module")
def ranker(device: torch.device) -> Ranker:
    torch.manual_seed(0)
    return Ranker(CONFIG).eval().to(device)


def test_bf16_error_is_measured_and_small_but_not_zero(ranker: Ranker) -> None:
    error = max_bf16_error(ranker, CONFIG.rank)
    assert 0.0 < error < 0.1  # bf16 keeps ~3 significant digits


def test_choice_follows_the_setting_and_the_tolerance(ranker: Ranker) -> None:
    error = max_bf16_error(ranker, CONFIG.rank)
    assert choose_dtype(ranker, CONFIG.rank, "float32") == torch.float32
    assert choose_dtype(ranker, CONFIG.rank, "bfloat16", tolerance=2 * error) == torch.bfloat16
    assert choose_dtype(ranker, CONFIG.rank, "bfloat16", tolerance=error / 2) == torch.float32
    auto = torch.bfloat16 if ranker.item_emb.weight.is_cuda else torch.float32
    assert choose_dtype(ranker, CONFIG.rank, "auto", tolerance=2 * error) == auto


@pytest.mark.parametrize("mode", ["elastic", "linear", "mean"])
def test_state_modes_are_served_in_float32(mode: str, device: torch.device) -> None:
    """bfloat16 is calibrated on the svd and softmax passes only, not on the state passes."""
    torch.manual_seed(0)
    config = RankerConfig(n_items=300, dim=32, heads=4, rank=8, mlp_hidden=32, mode=mode)
    ranker = Ranker(config).eval().to(device)
    assert choose_dtype(ranker, 8, "bfloat16", tolerance=10.0) == torch.float32


def test_a_lifelong_model_is_served_in_float32(device: torch.device) -> None:
    """Its two-channel MLP is not what the one-channel calibration passes score (they would
    fail on its shapes), with or without an svd read-out."""
    torch.manual_seed(0)
    config = RankerConfig(
        n_items=300, dim=32, heads=4, rank=8, mlp_hidden=32, mode="lifelong", recent_tokens=4
    )
    for readout in (False, True):
        ranker = Ranker(dataclasses.replace(config, svd_readout=readout)).eval().to(device)
        assert choose_dtype(ranker, 8, "bfloat16", tolerance=10.0) == torch.float32
