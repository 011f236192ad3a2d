"""The `lifelong` mode: a long-term channel (interest tokens) and a short-term channel (the L
latest raw events), each with its own softmax and its own output into the MLP, and, with
``repeat_buckets``, the repeat channel (the candidate's own count, from hashed item counts).
Serving from the state (factors + window + counts, built by the state builder in blocks out
of order) gives the scores of the training path; the two channels are really apart."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.config import ConfigError, RankerConfig
from model.modes import LoggedEvents, mode_spec, served_modes, state_kind
from model.ranker import HistoryBatch, Ranker
from model.states import LowRankState, make_builder
from tests.model.modes.support import state_user

L = 3
CONFIG = RankerConfig(
    n_items=40,
    n_actions=3,
    dim=16,
    heads=2,
    rank=4,
    oversample=4,
    mlp_hidden=16,
    mode="lifelong",
    recent_tokens=L,
)
LENGTHS = (0, 1, 2, 3, 12, 30)  # none, shorter than L, exactly L, longer than r + L


REPEAT_BUCKETS = 24  # 2·24 counts = 3 rows of d = 16


@pytest.fixture(scope="module", params=[0, REPEAT_BUCKETS], ids=["two-channels", "repeats"])
def ranker(request: pytest.FixtureRequest) -> Ranker:
    torch.manual_seed(0)
    model = Ranker(dataclasses.replace(CONFIG, repeat_buckets=request.param))
    torch.nn.init.normal_(model.action_emb.weight, std=0.3)
    return model.eval()


def _history(items: np.ndarray, actions: np.ndarray) -> HistoryBatch:
    n = items.size
    return HistoryBatch(
        torch.from_numpy(items)[None],
        torch.from_numpy(actions)[None],
        torch.ones(1, n, dtype=torch.bool),
        torch.ones(1, n),
    )


def _served(
    ranker: Ranker, items: np.ndarray, actions: np.ndarray, seed: int, cands: torch.Tensor
) -> torch.Tensor:
    builder = make_builder(ranker, rank=CONFIG.rank, oversample=4, decay=None, tag="")
    rng = np.random.default_rng(seed)
    order = rng.permutation(items.size)
    ts = np.arange(items.size, dtype=np.float64)
    state = builder.empty()
    for block in np.array_split(order, max(1, items.size // 4)):
        if block.size:
            state = builder.append(state, items[block], actions[block], ts[block])
    request = mode_spec("lifelong").request(cands, state_user(ranker, state, CONFIG.rank))
    with torch.inference_mode():
        return ranker.score_requests("lifelong", [request])[0]


def test_the_mode_is_registered_with_its_own_state_kind() -> None:
    assert state_kind("lifelong") == "lifelong"
    assert served_modes("lifelong") == ("lifelong",)
    assert served_modes("lifelong", svd_readout=True) == ("svd", "svd_exact", "softmax", "lifelong")
    assert mode_spec("lifelong").channels == 2
    with pytest.raises(ConfigError, match="recent_tokens"):
        RankerConfig(n_items=4, mode="lifelong")
    with pytest.raises(ConfigError, match="svd_readout needs mode 'lifelong'"):
        RankerConfig(n_items=4, svd_readout=True)


def test_the_svd_readout_serves_the_svd_family_from_the_lifelong_state() -> None:
    torch.manual_seed(0)
    ranker = Ranker(dataclasses.replace(CONFIG, repeat_buckets=REPEAT_BUCKETS, svd_readout=True))
    torch.nn.init.normal_(ranker.action_emb.weight, std=0.3)
    ranker.eval()
    rng = np.random.default_rng(2)
    cands = torch.arange(1, 15)
    builder = make_builder(ranker, rank=CONFIG.rank, oversample=4, decay=None, tag="")
    for n in (1, 12, 30):
        items = rng.integers(1, CONFIG.n_items, n)
        actions = rng.integers(0, CONFIG.n_actions, n)
        ts = np.arange(n, dtype=np.float64)
        state = builder.append(builder.empty(), items, actions, ts)
        logged = LoggedEvents(items, actions, np.ones(n))
        user = state_user(ranker, state, CONFIG.rank, logged)
        scores = {}
        for mode in ranker.served_modes():
            with torch.no_grad():
                trained = ranker(cands[None], _history(items, actions), mode)[0]
            request = mode_spec(mode).request(cands, user)
            with torch.inference_mode():
                scores[mode] = ranker.score_requests(mode, [request])[0]
            torch.testing.assert_close(scores[mode], trained, atol=1e-5, rtol=1e-5)
        # the svd family goes through the read-out: not the lifelong MLP's scores
        assert not torch.allclose(scores["svd"], scores["lifelong"], atol=1e-3)


def test_serving_from_the_state_equals_the_training_path(ranker: Ranker) -> None:
    rng = np.random.default_rng(1)
    cands = torch.arange(1, 15)
    for seed, n in enumerate(LENGTHS):
        items = rng.integers(1, CONFIG.n_items, n)
        actions = rng.integers(0, CONFIG.n_actions, n)
        if n:
            with torch.no_grad():
                trained = ranker(cands[None], _history(items, actions), "lifelong")[0]
        else:  # no history: both outputs are zero
            with torch.no_grad():
                cand = ranker.embed_items(cands[None])
                out = torch.zeros(1, cands.numel(), 2 * 16)
                extra = ranker.repeat_features(cands[None], _history(items, actions))
                trained = ranker.score_outputs(cand, out, extra)[0]
        served = _served(ranker, items, actions, seed, cands)
        torch.testing.assert_close(served, trained, atol=1e-5, rtol=1e-5)


def test_a_batch_of_users_of_several_sizes_scores_as_each_alone(ranker: Ranker) -> None:
    rng = np.random.default_rng(2)
    cands = torch.arange(1, 9)
    builder = make_builder(ranker, rank=CONFIG.rank, oversample=4, decay=None, tag="")
    requests, alone = [], []
    for n in (1, 7, 30):
        items, actions = rng.integers(1, 40, n), rng.integers(0, 3, n)
        state = builder.from_events(items, actions, np.arange(n, dtype=np.float64))
        req = mode_spec("lifelong").request(cands, state_user(ranker, state, CONFIG.rank))
        requests.append(req)
        with torch.inference_mode():
            alone.append(ranker.score_requests("lifelong", [req])[0])
    with torch.inference_mode():
        batched = ranker.score_requests("lifelong", requests)
    for b, a in zip(batched, alone, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_the_channels_have_their_own_softmax(ranker: Ranker) -> None:
    """The short-term output depends on the latest L events only, and the long-term tokens
    take no attention mass from them: o_short equals attention over those rows alone."""
    items = torch.arange(1, 21)[None]
    actions = torch.zeros_like(items)
    history = _history(items[0].numpy(), actions[0].numpy())
    cand = ranker.embed_items(torch.arange(1, 6)[None])
    with torch.no_grad():
        out = ranker.attend("lifelong", cand, history)
        rows = ranker.embed_events(items[:, -L:], actions[:, -L:])
        alone = ranker.attn(cand, rows, torch.ones(1, L, dtype=torch.bool))
    assert out.shape == (1, 5, 32)
    torch.testing.assert_close(out[..., 16:], alone)
    # the hybrid's single softmax mixes them: its output differs from either channel
    assert not torch.allclose(out[..., :16], out[..., 16:])


def test_the_repeat_channel_reads_each_candidates_own_count() -> None:
    """Without collisions the served counts are the exact counts of each candidate in the
    history; the features move the scores (a pass that dropped them would fail the equality
    test above); the counts survive the blob; a config that cannot carry them is refused."""
    torch.manual_seed(3)
    config = dataclasses.replace(CONFIG, repeat_buckets=2_048)  # 40 items: no collision
    model = Ranker(config).eval()
    builder = make_builder(model, rank=config.rank, oversample=4, decay=None, tag="")
    items = np.array([5, 5, 5, 7, 9, 9, 0])  # 0: OOV, counted nowhere
    state = builder.from_events(items, np.zeros(7, dtype=np.int64), np.arange(7.0))
    state = builder.append(state, np.array([7]), np.array([1]), np.array([2.5]))  # out of order
    cands = torch.tensor([5, 7, 9, 11, 0])
    request = mode_spec("lifelong").request(cands, state_user(model, state, config.rank))
    assert request.repeats is not None
    counts = torch.expm1(request.repeats[:, 0])
    torch.testing.assert_close(counts, torch.tensor([3.0, 2.0, 2.0, 0.0, 0.0]))
    torch.testing.assert_close(request.repeats[:, 1], counts / 7.0)
    with torch.inference_mode():
        served = model.score_requests("lifelong", [request])[0]
        blind = dataclasses.replace(request, repeats=torch.zeros_like(request.repeats))
        without = model.score_requests("lifelong", [blind])[0]
    assert (served - without)[:3].abs().min() > 1e-3
    assert torch.equal((served - without)[3:], torch.zeros(2))
    assert isinstance(state, LowRankState) and state.repeats is not None
    again = LowRankState.from_bytes(state.to_bytes())
    assert again.repeats is not None
    np.testing.assert_array_equal(again.repeats.counts, state.repeats.counts)
    assert builder.fits(again) and not builder.fits(dataclasses.replace(again, repeats=None))
    with pytest.raises(ConfigError, match="lifelong"):
        RankerConfig(n_items=4, repeat_buckets=32)
    with pytest.raises(ConfigError, match="multiple of dim"):
        dataclasses.replace(CONFIG, repeat_buckets=20)
