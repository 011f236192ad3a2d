"""Fixtures of the load-test tests: a tiny random checkpoint the scripts can serve."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.checkpoint import save_checkpoint
from model.config import RankerConfig
from model.ranker import Ranker
from model.vocabulary import Vocabulary

N_ITEMS = 300


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight checkpoint (d=64, r=32) over item ids 1..300 and one action."""
    torch.manual_seed(0)
    vocab = Vocabulary(tuple(str(i) for i in range(1, N_ITEMS + 1)), ("view",))
    ranker = Ranker(RankerConfig(n_items=vocab.n_items, n_actions=vocab.n_actions))
    path = tmp_path_factory.mktemp("model")
    save_checkpoint(path, ranker, vocab)
    return path
