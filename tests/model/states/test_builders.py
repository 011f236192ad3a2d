"""Builders: each trained mode gets its kind of state from the events, the operations agree,
and the svd builder owns the hybrid's window of latest events."""

from __future__ import annotations

import numpy as np
import pytest

from model.modes import SERVING_MODES, served_modes, state_kind
from model.states import Decay, LowRankState, StateError, make_builder
from model.states.weights import ranker_embed
from tests.model.states.support import event_rows, ranker

SHAPES = {"svd": (32, 64), "elastic": (32, 64), "linear": (4, 16, 17), "mean": (64,)}


@pytest.mark.parametrize("mode", ["svd", "svd_exact", "softmax", "elastic", "linear", "mean"])
def test_each_mode_builds_its_kind(mode: str) -> None:
    builder = make_builder(ranker(mode), rank=32, oversample=16, decay=Decay(6000.0), tag="t")
    kind = state_kind(mode)
    assert builder.kind == kind and builder.tag == "t"
    items, actions, ts = event_rows(120, 1)
    batch = builder.from_events(items, actions, ts)
    first = builder.append(builder.empty(), items[:70], actions[:70], ts[:70])
    incremental = builder.append(first, items[70:], actions[70:], ts[70:])
    assert batch.kind == incremental.kind == kind and batch.tag == "t"
    assert batch.n == incremental.n == 120 and batch.t_ref == ts.max()
    assert builder.fits(batch) and builder.fits(builder.empty())
    features = builder.features(batch)
    assert features.shape == SHAPES[kind]
    np.testing.assert_allclose(
        np.abs(builder.features(incremental)) if kind == "svd" else builder.features(incremental),
        np.abs(features) if kind == "svd" else features,
        atol=1e-6,
    )
    assert served_modes(mode) == (SERVING_MODES if kind == "svd" else (mode,))


@pytest.mark.parametrize("mode", ["svd", "elastic", "linear", "mean"])
def test_the_builder_embeds_the_events_through_the_model(mode: str) -> None:
    """from_events(items, actions, ts) is the state of the rows E_item[i] + E_action[a]."""
    model = ranker(mode)
    builder = make_builder(model, rank=32, oversample=16, decay=Decay(60.0), tag="t")
    items, actions, ts = event_rows(30, 4)
    rows = ranker_embed(model)(items, actions)  # (N, d)
    expected = (model.item_emb.weight[items] + model.action_emb.weight[actions]).detach().numpy()
    np.testing.assert_allclose(rows, expected, atol=1e-12)
    assert not np.allclose(rows, ranker_embed(model)(items, np.zeros_like(actions)))  # actions
    if mode == "svd":
        ref = LowRankState.from_rows(rows, 32, ts=ts, decay=Decay(60.0), tag="t")
        state = builder.from_events(items, actions, ts)
        assert isinstance(state, LowRankState)
        np.testing.assert_allclose(state.sigma, ref.sigma, rtol=1e-12)
    seen: list[int] = []

    def counting(i: np.ndarray, a: np.ndarray) -> np.ndarray:
        seen.append(int(i.shape[0]))
        return ranker_embed(model)(i, a)

    given = make_builder(model, rank=32, oversample=16, decay=None, tag="t", embed=counting)
    given.append(given.from_events(items, actions, ts), items[:3], actions[:3], ts[:3])
    assert seen == [30, 3]  # the builder embeds through the function it is given


def test_no_events_give_the_empty_state() -> None:
    builder = make_builder(ranker("svd"), rank=8, oversample=4, decay=None, tag="t")
    none = np.zeros(0, dtype=np.int64)
    state = builder.from_events(none, none, np.zeros(0))
    assert state.n == 0 and state.t_ref is None and builder.fits(state)
    np.testing.assert_array_equal(builder.features(state), np.zeros((8, 64)))  # o_c = 0


def test_the_svd_builder_keeps_the_hybrids_window_of_latest_events() -> None:
    k = 5
    model = ranker("svd", recent_tokens=k)
    builder = make_builder(model, rank=8, oversample=4, decay=Decay(600.0), tag="t")
    items, actions, ts = event_rows(30, 3)
    batch = builder.from_events(items, actions, ts)
    state = builder.empty()
    for block in np.array_split(np.arange(30), 4):
        state = builder.append(state, items[block], actions[block], ts[block])
    latest = np.argsort(ts, kind="stable")[-k:]  # oldest first
    for got in (batch, state):
        assert isinstance(got, LowRankState) and got.recent is not None
        assert got.recent.capacity == k and builder.fits(got)
        np.testing.assert_array_equal(got.recent.items, items[latest])
        np.testing.assert_array_equal(got.recent.actions, actions[latest])
        np.testing.assert_array_equal(got.recent.ts, ts[latest])
    assert isinstance(batch, LowRankState)
    # What the hybrid request reads: the r live interest tokens, then the k latest event rows.
    features = builder.features(batch)
    assert features.shape == (8 + k, 64)
    np.testing.assert_allclose(features[:8], batch.interests(8), atol=1e-12)
    np.testing.assert_allclose(features[8:], ranker_embed(model)(items[latest], actions[latest]))
    plain = make_builder(ranker("svd"), rank=8, oversample=4, decay=Decay(600.0), tag="t")
    assert not plain.fits(batch) and not builder.fits(plain.from_events(items, actions, ts))
    unwindowed = plain.from_events(items, actions, ts)
    assert isinstance(unwindowed, LowRankState) and unwindowed.recent is None


def test_only_live_tokens_are_served() -> None:
    builder = make_builder(ranker("svd"), rank=8, oversample=4, decay=None, tag="t")
    items, actions, ts = event_rows(3, 5)  # rank 3 < r = 8
    state = builder.from_events(items, actions, ts)
    assert builder.features(state).shape == (3, 64)


def test_the_basis_is_the_svd_states_right_singular_vectors() -> None:
    items, actions, ts = event_rows(20, 6)
    svd = make_builder(ranker("svd"), rank=8, oversample=4, decay=None, tag="t")
    state = svd.from_events(items, actions, ts)
    assert isinstance(state, LowRankState)
    basis = svd.basis(state)
    assert basis.shape == (64, 8) and basis.flags.c_contiguous
    np.testing.assert_array_equal(basis, state.V[:, :8])
    mean = make_builder(ranker("mean"), rank=8, oversample=4, decay=None, tag="t")
    with pytest.raises(StateError, match="no singular vectors"):
        mean.basis(mean.from_events(items, actions, ts))


def test_a_state_of_another_kind_or_shape_does_not_fit_and_is_refused() -> None:
    items, actions, ts = event_rows(10, 2)
    svd = make_builder(ranker("svd"), rank=32, oversample=16, decay=None, tag="t")
    narrow = make_builder(ranker("svd"), rank=8, oversample=16, decay=None, tag="t")
    elastic = make_builder(ranker("elastic"), rank=32, oversample=16, decay=None, tag="t")
    small = make_builder(ranker("elastic", heads=2), rank=32, oversample=16, decay=None, tag="t")
    assert not svd.fits(elastic.from_events(items, actions, ts))
    assert not elastic.fits(svd.from_events(items, actions, ts))
    assert not narrow.fits(svd.empty())
    assert not small.fits(elastic.empty())
    for builder, other in ((svd, elastic), (elastic, svd)):
        with pytest.raises(StateError, match="was given a"):
            builder.append(other.empty(), items, actions, ts)
        with pytest.raises(StateError, match="was given a"):
            builder.features(other.empty())
