"""The mode registry: one entry per mode, a clear error for an unknown one, the FLOP counts of
before the registry, and a new entry dispatched by the unchanged ranker, packer and pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from model.config import ATTENTION_MODES, RankerConfig
from model.flops import PassFlops
from model.modes import (
    BASELINE_MODES,
    MODES,
    SERVING_MODES,
    RankerInputError,
    ScoreRequest,
    UnknownModeError,
    UserArrays,
    mode_spec,
    served_modes,
    serving_flops,
    state_kind,
)
from model.ranker import HistoryBatch, Ranker
from model.states import LowRankState
from tests.model.modes.support import StrongestInterest, state_user

CONFIG = RankerConfig(n_items=40, n_actions=2, dim=16, heads=2, rank=4, oversample=4, mlp_hidden=16)


def test_every_mode_has_one_entry_under_its_name() -> None:
    assert sorted(MODES) == sorted(ATTENTION_MODES)
    for name, entry in MODES.items():
        assert entry.name == name
        assert mode_spec(name) is entry


def test_an_unknown_mode_is_a_clear_error() -> None:
    with pytest.raises(UnknownModeError, match=r"'svd_fast'.*svd, svd_exact, softmax"):
        mode_spec("svd_fast")
    assert issubclass(UnknownModeError, RankerInputError)
    ranker = Ranker(CONFIG).eval()
    history = HistoryBatch(*_history(3))
    with pytest.raises(UnknownModeError, match="svd_fast"):
        ranker(torch.arange(1, 4)[None], history, "svd_fast")
    with pytest.raises(RankerInputError, match="svd_fast"):
        ranker.score_requests("svd_fast", [ScoreRequest(torch.arange(3))])


def test_state_kinds_and_served_modes() -> None:
    assert {m: state_kind(m) for m in ATTENTION_MODES} == {
        "svd": "svd",
        "svd_exact": "svd",
        "softmax": "svd",
        "elastic": "elastic",
        "linear": "linear",
        "mean": "mean",
        "lifelong": "lifelong",
    }
    assert SERVING_MODES == ("svd", "svd_exact", "softmax")
    assert sorted(BASELINE_MODES) == ["elastic", "linear", "mean"]
    for mode in ATTENTION_MODES:
        expected = SERVING_MODES if mode in SERVING_MODES else (mode,)
        assert served_modes(mode) == expected
        assert mode_spec(mode).reads_log == (mode in ("svd_exact", "softmax"))


def _flops_before_the_registry(
    config: RankerConfig, mode: str, candidates: int, rank: int, history: int
) -> PassFlops:
    """``model.flops.serving_flops`` as it was written before the registry (svd modes)."""
    d, hidden = config.dim, config.mlp_hidden
    tokens = rank if mode == "svd" else history
    context = 2 * 2 * tokens * d * d
    if mode == "svd_exact":
        context += 2 * 2 * history * d * rank
    attention = candidates * 2 * 2 * tokens * d
    per_candidate = (
        2 * d * d + 2 * (2 * d) * hidden + 2 * hidden * (hidden // 2) + 2 * (hidden // 2)
    )
    return PassFlops(context=context, attention=attention, dense=candidates * per_candidate)


@pytest.mark.parametrize("mode", SERVING_MODES)
@pytest.mark.parametrize(("m", "r", "n"), [(2_048, 32, 0), (100, 32, 1_000), (7, 5, 33)])
def test_flops_equal_the_formula_of_before_the_registry(mode: str, m: int, r: int, n: int) -> None:
    config = RankerConfig(n_items=10, dim=64, heads=4, rank=32, mlp_hidden=128)
    expected = _flops_before_the_registry(config, mode, m, r, n)
    assert serving_flops(config, mode, m, r, n) == expected


def test_flops_of_the_baselines_counted_by_hand() -> None:
    config = RankerConfig(n_items=10, dim=64, heads=4, rank=32, mlp_hidden=128, elastic_tokens=8)
    mlp = 2 * 128 * 128 + 2 * 128 * 64 + 2 * 64  # fc1 on [o, e ⊙ o], fc2, out
    elastic = serving_flops(config, "elastic", candidates=10, rank=32, history=5_000)
    assert elastic == (4 * 8 * 64 * 64, 10 * 4 * 8 * 64, 10 * (2 * 64 * 64 + mlp))
    linear = serving_flops(config, "linear", candidates=10, rank=32)
    assert linear == (0, 10 * (2 * 64 * 64 + 2 * 64 * 17), 10 * (2 * 64 * 64 + mlp))
    assert serving_flops(config, "mean", candidates=10, rank=32) == (2 * 64 * 64, 0, 10 * mlp)


def _history(n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, CONFIG.n_items, (1, n), generator=gen)
    weights = torch.rand(1, n, generator=gen) * 0.9 + 0.1
    return items, torch.ones_like(items), torch.ones(1, n, dtype=torch.bool), weights


def test_a_new_entry_is_trained_served_and_counted_without_other_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(MODES, "svd_top1", StrongestInterest())
    assert served_modes("svd") == ("svd", "svd_exact", "softmax", "svd_top1")
    torch.manual_seed(0)
    ranker = Ranker(CONFIG).eval()
    cands = torch.arange(1, 21)
    items, actions, mask, weights = _history(30)
    with torch.no_grad():
        trained = ranker(cands[None], HistoryBatch(items, actions, mask, weights), "svd_top1")[0]
        full = ranker(cands[None], HistoryBatch(items, actions, mask, weights), "svd")[0]
        rows = ranker.embed_events(items[0], actions[0]).double().numpy()
    state = LowRankState.from_rows(rows, CONFIG.rank, weights[0].double().numpy(), oversample=4)
    user = state_user(ranker, state, CONFIG.rank)
    request = mode_spec("svd_top1").request(cands, user)
    assert request.interests is not None and request.interests.shape == (1, CONFIG.dim)
    with torch.inference_mode():
        (served,) = ranker.score_requests("svd_top1", [request])
    torch.testing.assert_close(served, trained, atol=1e-5, rtol=1e-5)
    assert float((trained - full).abs().max()) > 1e-4  # not the svd mode under another name
    assert serving_flops(CONFIG, "svd_top1", 20, 4).attention == 20 * 2 * 2 * 1 * 16


def test_user_arrays_name_what_they_were_not_given() -> None:
    user = UserArrays()
    for read in (user.features, user.basis, user.events):
        with pytest.raises(ValueError, match="no"):
            read()
    assert np.array_equal(UserArrays(state_features=np.ones(3)).features(), np.ones(3))
