"""User states: checks against the model, batch and incremental factors, rebuilds, the view."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model.states import Decay, LowRankState, StateBuilder, UserState
from service.core.serving_model import ServingModel, load_serving_model
from service.core.users import RebuildGate, UserStates, parse_state, served_singular_values
from service.errors import RebuildsBusy, StateUnreadable, UnknownUser
from service.history.base import HistoryChunk
from service.history.memory import MemoryHistory
from service.metrics import Metrics
from service.store.base import AppendRequest
from service.store.dedup_ring import digests
from service.store.eventlog import identity_keys, make_records
from service.store.memory import MemoryStore
from tests.model.states.support import legacy_blob
from tests.service.conftest import SettingsFactory
from tests.service.support import gram


@pytest.fixture
def model(make_settings: SettingsFactory) -> ServingModel:
    return load_serving_model(make_settings())


def _rows_builder(model: ServingModel, rows: np.ndarray) -> StateBuilder:
    """The model's state builder (its kind, rank, oversampling, decay, tag) with the event i
    embedded as ``rows[i]``: arbitrary rows (N, d) as events."""
    return dataclasses.replace(model.states, embed=lambda items, _actions: rows[items])


def batch_state(rows: np.ndarray, ts: np.ndarray, model: ServingModel) -> LowRankState:
    events = np.arange(rows.shape[0])
    state = _rows_builder(model, rows).from_events(events, events * 0, ts)
    assert isinstance(state, LowRankState)
    return state


def append_rows(
    state: UserState | None, rows: np.ndarray, ts: np.ndarray, model: ServingModel
) -> LowRankState:
    builder, events = _rows_builder(model, rows), np.arange(rows.shape[0])
    base = state if state is not None else builder.empty()
    updated = builder.append(base, events, events * 0, ts)
    assert isinstance(updated, LowRankState)
    return updated


@pytest.mark.parametrize("half_life_s", [None, 50.0])
def test_batch_state_uses_the_model_configuration(
    make_settings: SettingsFactory, half_life_s: float | None
) -> None:
    """σ², V against the eigendecomposition of Xᵀ W X with the configured rank and decay."""
    model = load_serving_model(make_settings(half_life_s=half_life_s, rank=3, oversample=5))
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(600, model.dim))
    ts = rng.uniform(0, 1_000, size=600)
    w = Decay(half_life_s).weights(ts, ts.max()) if half_life_s else np.ones(600)
    evals, evecs = np.linalg.eigh((rows * w[:, None]).T @ rows)  # ascending
    got = batch_state(rows, ts, model)
    assert (got.rank, got.ell, got.n, got.t_ref) == (3, 8, 600, ts.max())
    np.testing.assert_allclose(got.sigma**2, evals[::-1][:8], rtol=1e-9)
    np.testing.assert_allclose(np.abs(got.V.T @ evecs[:, ::-1][:, :8]), np.eye(8), atol=1e-6)
    assert np.all(got.V.T @ got.s >= 0)  # the sign convention
    assert got.n_eff == pytest.approx(w.sum())
    assert got.residual == pytest.approx(evals[::-1][8:].sum())
    assert got.tag == str(model.state_tag)
    assert got.tag.startswith(model.version)


def test_incremental_with_decay_matches_batch(make_settings: SettingsFactory) -> None:
    model = load_serving_model(make_settings(half_life_s=30.0))
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(50, model.dim))
    ts = np.sort(rng.uniform(0, 200, size=50))
    state = None
    for start in range(0, 50, 8):
        state = append_rows(state, rows[start : start + 8], ts[start : start + 8], model)
    assert state is not None
    ref = batch_state(rows, ts, model)
    np.testing.assert_allclose(gram(state), gram(ref), atol=1e-8)
    assert state.n_eff == pytest.approx(ref.n_eff)


def test_parse_state_reasons(model: ServingModel) -> None:
    fresh = append_rows(None, np.ones((2, model.dim)), np.array([1.0, 2.0]), model)
    assert parse_state(None, model) == (None, None)
    assert parse_state(fresh.to_bytes(), model).rebuild is None
    other = replace(fresh, tag="another")
    assert parse_state(other.to_bytes(), model).rebuild == "model_version"
    narrow = LowRankState.empty(model.dim, 2, 1, model.version)
    assert parse_state(narrow.to_bytes(), model).rebuild == "config"
    assert parse_state(b"junk", model) == (None, "corrupt")


def test_rebuild_from_log_maps_items_and_actions(model: ServingModel, checkpoint_dir: Path) -> None:
    records = make_records(
        [1.0, 2.0, 3.0], [1, "alpha", "unknown"], ["click", None, "nope"], [None] * 3
    )
    items, actions = model.log_rows(records)
    vocab = model.checkpoint.vocab
    assert items.tolist() == [vocab.item_row(1), vocab.item_row("alpha"), 0]
    assert actions.tolist() == [vocab.action_row("click"), 0, 0]
    users = UserStates(MemoryStore(), model, Metrics(), history=MemoryHistory(), dedup_window=1_000)
    state = users.from_log(records)
    assert state.n == 3 and state.t_ref == 3.0
    assert users.from_log(records[:0]).n == 0


@pytest.mark.parametrize(("rank", "oversample"), [(4, 4), (4, 12)])  # ℓ < d and ℓ = d
def test_large_blocks_of_repeated_items_stay_exact(
    make_settings: SettingsFactory, rank: int, oversample: int
) -> None:
    """200 events over 6 distinct rows (rank 6 ≤ ℓ) in one request: exact factors."""
    model = load_serving_model(make_settings(rank=rank, oversample=oversample))
    rng = np.random.default_rng(2)
    distinct = rng.normal(size=(6, model.dim))
    rows = distinct[rng.integers(0, 6, size=200)]
    ts = np.arange(200.0)
    state = append_rows(None, rows, ts, model)
    ref = batch_state(rows, ts, model)
    np.testing.assert_allclose(state.sigma, ref.sigma, atol=1e-9)
    np.testing.assert_allclose(gram(state), gram(ref), atol=1e-9)
    assert state.residual_ratio < 1e-12


# ---- round trips through a real store (embedded and Redis) -----------------------------------
def _records(n: int, start: int = 1) -> np.ndarray:
    items = [(i % 40) + 1 for i in range(start, start + n)]
    return make_records([float(i) for i in range(start, start + n)], items, [None] * n, [None] * n)


async def _users(model: ServingModel, store_url: str | None) -> UserStates:
    from service.backends import open_backends
    from service.settings import Settings

    settings = Settings(redis_url=store_url, dedup_window=1_000)
    backends = await open_backends(settings)
    return UserStates.create(settings, backends.store, model, Metrics(), history=backends.history)


async def _append(users: UserStates, records: np.ndarray, user: str = "u") -> None:
    request = AppendRequest(user, records.tobytes(), digests(identity_keys(records)))
    (result,) = await users.store.append_batch([request], dedup_window=1_000, create=True)
    await users.history.append([HistoryChunk(user, result.durable + 1, result.undurable)])
    await users.store.mark_durable([(user, result.seq)])


@pytest.mark.anyio
async def test_apply_then_load_gives_the_batch_factors(
    model: ServingModel, store_url: str | None
) -> None:
    users = await _users(model, store_url)
    try:
        assert (await users.load("u")).state is None  # unknown user: no history
        first, second = _records(7), _records(5, start=8)
        await _append(users, first)
        assert (await users.apply_pending("u")).events == 7
        await _append(users, second)
        assert (await users.apply_pending("u")).events == 5
        assert (await users.apply_pending("u")).events == 0  # nothing twice
        loaded = await users.load("u", with_log=True)
        assert loaded.state is not None and loaded.state.n == 12
        assert loaded.log["ts"].tolist() == [float(i) for i in range(1, 13)]
        ref = users.from_log(np.concatenate([first, second]))
        np.testing.assert_allclose(gram(loaded.state), gram(ref), atol=1e-5)  # float32 blob
        assert (await users.load("u")).log.shape == (0,)  # the log only when asked for
        view = await users.view("u")
        assert (view.history_length, view.pending) == (12, 0)
    finally:
        await users.store.close()


async def _append_undurable(users: UserStates, records: np.ndarray, user: str = "u") -> int:
    """Store ``records`` in the Redis tail only, as an ingest does before its durable write
    landed; returns the user's new seq."""
    request = AppendRequest(user, records.tobytes(), digests(identity_keys(records)))
    (result,) = await users.store.append_batch([request], dedup_window=1_000, create=True)
    return result.seq


@pytest.mark.anyio
@pytest.mark.parametrize("inline_block_events", [0, 32])
async def test_an_apply_whose_notices_are_durable_leaves_a_later_ingests_tail_to_it(
    model: ServingModel, store_url: str | None, inline_block_events: int
) -> None:
    """The applier's notices announce events up to seq 7, durable; a second ingest has put
    events 8–12 in the tail and not yet written them durably. The apply folds 1–7 in and
    writes nothing to the durable tier (that ingest does); without ``through_seq`` (the
    sweeper) it makes 8–12 durable itself and applies them all."""
    users = await _users(model, store_url)
    users.inline_block_events = inline_block_events
    try:
        first, second = _records(7), _records(5, start=8)
        await _append(users, first)
        assert await _append_undurable(users, second) == 12
        assert await users.apply_pending("u", through_seq=7) == (7, None)
        assert (await users.history.read("u")).last_seq == 7  # not written by the applier
        assert (await users.view("u")).pending == 5
        assert await users.apply_pending("u", through_seq=7) == (0, None)  # nothing twice
        assert await users.apply_pending("u", through_seq=12) == (5, None)  # its own: persisted
        assert (await users.history.read("u")).last_seq == 12
        loaded = await users.load("u")
        assert loaded.state is not None and loaded.state.n == 12
        ref = users.from_log(np.concatenate([first, second]))
        np.testing.assert_allclose(gram(loaded.state), gram(ref), atol=1e-5)
        third = _records(3, start=13)
        await _append_undurable(users, third)
        assert await users.apply_pending("u") == (3, None)  # the sweeper: persists, applies
        assert (await users.history.read("u")).last_seq == 15
    finally:
        await users.store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("inline_block_events", [0, 32])
async def test_a_batch_apply_settles_the_common_users_and_leaves_the_rest_alone(
    model: ServingModel, store_url: str | None, inline_block_events: int
) -> None:
    """``apply_pending_many``: a user with a state and durable pending events is folded in
    and committed, a later ingest's undurable tail left to it; nothing pending is (0, None);
    a user without a state yet whose tail holds its whole history gets its first state (the
    batch state of that history); a second entry of a user whose fence the first one moved
    is left to ``apply_pending``. The states equal the batch factors of the events applied."""
    users = await _users(model, store_url)
    users.inline_block_events = inline_block_events
    try:
        for user in ("a", "b", "idle"):
            await _append(users, _records(6), user)
            assert (await users.apply_pending(user)).events == 6
        await _append(users, _records(4, start=7), "a")
        await _append(users, _records(3, start=7), "b")
        assert await _append_undurable(users, _records(2, start=10), "b") == 11
        await _append(users, _records(5), "new")
        through = [("a", 10), ("b", 9), ("idle", 6), ("new", 5), ("a", 10)]
        assert await users.apply_pending_many(through) == [
            (4, None),
            (3, None),
            (0, None),
            (5, None),  # no state yet, its whole history in the tail: the first state
            None,  # read before the first entry's commit: its fence is lost
        ]
        assert (await users.view("new")).pending == 0
        assert (await users.view("b")).pending == 2  # the undurable tail: its ingest's notice
        assert (await users.history.read("b")).last_seq == 9
        for user, n in (("a", 10), ("b", 9)):
            loaded = await users.load(user)
            assert loaded.state is not None and loaded.state.n == n
            ref = users.from_log(np.concatenate([_records(6), _records(n - 6, start=7)]))
            np.testing.assert_allclose(gram(loaded.state), gram(ref), atol=1e-5)
        first = (await users.load("new")).state
        assert first is not None and first.n == 5
        np.testing.assert_allclose(gram(first), gram(users.from_log(_records(5))), atol=1e-5)
        # Another version applied a user's events, so the tail dropped them: this version's
        # first state needs the durable tier, which is ``apply_pending``'s job.
        await _append(users, _records(4), "moved")
        gen = (await users.store.read_log("moved", None, unapplied_only=False)).gen
        assert await users.store.commit_state(
            "moved", "another-version", b"S", gen=gen, expected_applied=0, applied=4
        )
        assert await users.apply_pending_many([("moved", 4)]) == [None]
        assert (await users.apply_pending("moved")).events == 4
        assert await users.apply_pending_many([("a", 10), ("idle", 6)]) == [(0, None)] * 2
    finally:
        await users.store.close()


@pytest.mark.anyio
async def test_a_state_stored_by_the_previous_release_is_used_and_rewritten_in_format_3(
    model: ServingModel, store_url: str | None
) -> None:
    """A format-1 blob (written before the family's one format) of the model's shape and tag
    loads as is, no rebuild; the next update writes format 3."""
    users = await _users(model, store_url)
    try:
        first, second = _records(7), _records(5, start=8)
        await _append(users, first)
        old = users.from_log(first)
        assert isinstance(old, LowRankState)
        legacy = legacy_blob(old)
        assert legacy[4:6] == b"\x01\x00"
        assert await users.store.commit_state(
            "u", model.version, legacy, gen=0, expected_applied=0, applied=7
        )
        assert parse_state(legacy, model).rebuild is None
        loaded = (await users.load("u")).state
        assert isinstance(loaded, LowRankState) and loaded.n == 7
        np.testing.assert_array_equal(loaded.V, LowRankState.from_bytes(old.to_bytes()).V)
        await _append(users, second)
        assert await users.apply_pending("u") == (5, None)  # updated, not rebuilt
        blob = await users.store.get_state("u", model.version)
        assert blob is not None and blob[4:6] == b"\x03\x00"
        ref = users.from_log(np.concatenate([first, second]))
        np.testing.assert_allclose(gram(LowRankState.from_bytes(blob)), gram(ref), atol=1e-5)
    finally:
        await users.store.close()


@pytest.mark.anyio
async def test_view_shows_pending_events_before_they_are_applied(
    model: ServingModel, store_url: str | None
) -> None:
    users = await _users(model, store_url)
    try:
        await _append(users, _records(3))
        view = await users.view("u")
        assert (view.history_length, view.pending) == (0, 3)
        await users.apply_pending("u")
        assert (await users.view("u")).pending == 0
    finally:
        await users.store.close()


@pytest.mark.anyio
async def test_load_rebuilds_a_corrupt_state_once_and_writes_it_back(
    model: ServingModel, store_url: str | None
) -> None:
    users = await _users(model, store_url)
    try:
        await _append(users, _records(9))
        assert await users.store.commit_state(
            "u", model.version, b"garbage", gen=0, expected_applied=0, applied=9
        )
        with pytest.raises(StateUnreadable):
            await users.view("u")
        loaded = await users.load("u")
        assert loaded.state is not None and loaded.state.n == 9
        view = await users.view("u")  # written back: readable now
        assert view.history_length == 9 and view.model_version == model.version
        assert len(view.singular_values) == model.rank  # the r served values, not ℓ
        rebuilt = users.metrics.registry.get_sample_value(
            "solar_state_rebuilds_total",
            {"reason": "corrupt", "version": model.version, "path": "rank"},
        )
        assert rebuilt == 1
        with pytest.raises(UnknownUser):
            await users.view("nobody")
        assert (await users.load("nobody")).state is None
    finally:
        await users.store.close()


@pytest.mark.anyio
async def test_a_deleted_user_is_not_brought_back_by_an_apply(
    model: ServingModel, store_url: str | None
) -> None:
    users = await _users(model, store_url)
    try:
        await _append(users, _records(4))
        assert await users.forget("u")
        assert (await users.apply_pending("u")).events == 0
        assert await users.store.get_state("u", model.version) is None
        with pytest.raises(UnknownUser):
            await users.view("u")
    finally:
        await users.store.close()


@pytest.mark.anyio
async def test_forget_removes_state_and_log_and_fences_a_late_applier(
    model: ServingModel, store_url: str | None
) -> None:
    """An applier that read the user before the delete cannot write its state afterwards."""
    users = await _users(model, store_url)
    try:
        await _append(users, _records(6))
        assert (await users.apply_pending("u")).events == 6
        await _append(users, _records(3, start=7))
        late = await users.store.read_log(
            "u", model.version, unapplied_only=True
        )  # the applier's read
        state = users.from_log(_records(9))
        assert await users.forget("u") is True
        assert await users.forget("u") is False  # nothing stored any more
        assert not await users.store.commit_state(  # the applier's fenced write: refused
            "u",
            model.version,
            state.to_bytes(),
            gen=late.gen,
            expected_applied=late.applied,
            applied=late.seq,
        )
        assert await users.store.get_state("u", model.version) is None
        gone = await users.store.read_log("u", model.version, unapplied_only=False)
        assert (gone.length, gone.records) == (0, b"")
        assert (await users.load("u")).state is None
        with pytest.raises(UnknownUser):
            await users.view("u")
    finally:
        await users.store.close()


def test_served_singular_values_drop_rounding_noise() -> None:
    sigma = np.array([2.0, 1.0, 3e-7, 8.8e-17, 5.0])  # ℓ = 5 (the tail beyond r unused)
    assert served_singular_values(sigma, 4) == [2.0, 1.0, 0.0, 0.0]
    assert served_singular_values(np.zeros(3), 2) == [0.0, 0.0]  # no history at all


@pytest.mark.anyio
async def test_rank_path_rebuilds_of_a_new_version_are_rate_limited(model: ServingModel) -> None:
    """A user the version has no state for is rebuilt once on load (reason new_version); past
    the gate's slots and queue, the next one is refused with RebuildsBusy (503), not queued."""
    users = UserStates(
        MemoryStore(),
        model,
        Metrics(),
        history=MemoryHistory(),
        dedup_window=1_000,
        rebuild_gate=RebuildGate(concurrent=1, queue=0),
    )
    await _append(users, _records(9))
    loaded = await users.load("u")
    assert loaded.state is not None and loaded.state.n == 9
    labels = {"reason": "new_version", "version": model.version, "path": "rank"}
    registry = users.metrics.registry
    assert registry.get_sample_value("solar_state_rebuilds_total", labels) == 1
    assert (await users.load("u")).state is not None  # written back: no second rebuild
    assert registry.get_sample_value("solar_state_rebuilds_total", labels) == 1
    async with users.rebuild_gate.turn():  # the one slot is taken
        with pytest.raises(RebuildsBusy):
            async with users.rebuild_gate.turn():
                pass
