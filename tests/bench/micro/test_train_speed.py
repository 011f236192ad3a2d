"""bench/micro/train_speed.py: one timed training step per mode on a tiny dataset, every mode."""

from __future__ import annotations

import math

import pytest
import torch

from bench.micro.train_speed import MODES, step_seconds
from model.synthetic import SyntheticConfig, generate

TINY = SyntheticConfig(
    n_users=8, n_items=60, n_topics=4, interests=2, min_length=30, max_length=40, seed=2
)


@pytest.mark.parametrize("label", MODES)
def test_every_mode_takes_a_timed_training_step(label: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds = step_seconds(generate(TINY).interactions, label, 20, 7, 4, 1)
    finally:
        torch.set_num_threads(threads)
    assert math.isfinite(seconds) and seconds > 0
