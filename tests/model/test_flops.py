"""model/flops.py: the serving pass's FLOPs, counted by hand for the default shapes."""

from __future__ import annotations

from model.config import RankerConfig
from model.modes import serving_flops

CONFIG = RankerConfig(n_items=10, dim=64, heads=4, rank=32, mlp_hidden=128)


def test_svd_at_the_default_shapes() -> None:
    flops = serving_flops(CONFIG, "svd", candidates=2_048, rank=32)
    # Per candidate: Q Kᵀ and A V over 32 tokens (2·2·32·64), W_O (2·64·64), fc1 on 128
    # inputs (2·128·128), fc2 (2·128·64), out (2·64); per request K and V (2·2·32·64·64).
    per_candidate = 8_192 + 8_192 + 32_768 + 16_384 + 128
    assert flops.total == 2_048 * per_candidate + 524_288
    assert 134e6 < flops.total < 136e6  # the issue's ~134 MFLOP at M = 2,048
    assert flops.attention == 2_048 * 8_192


def test_history_modes_grow_with_n() -> None:
    soft = serving_flops(CONFIG, "softmax", candidates=100, rank=32, history=1_000)
    assert soft.attention == 100 * 2 * 2 * 1_000 * 64
    assert soft.context == 2 * 2 * 1_000 * 64 * 64
    exact = serving_flops(CONFIG, "svd_exact", candidates=100, rank=32, history=1_000)
    assert exact.context == soft.context + 2 * 2 * 1_000 * 64 * 32
    assert exact.dense == soft.dense
