"""Builders of each state kind, bound to a model's weights, decay and tag.

A builder turns the events themselves (item rows, action rows, times; the int arrays
``ServingModel.log_rows`` gives) into a state: it embeds them through the model's tables
(x_j = E_item[i_j] + E_action[a_j]: ``model.states.weights.ranker_embed``, or the function
it is given), then builds or updates its kind. A state of the `elastic` or `linear` kind
depends on the model's projections, so its builder holds frozen float64 copies of them (made
once per loaded model); the svd builder keeps the hybrid's window of latest events itself.
Every builder offers the same operations, so the service never branches on the kind to
load, apply, rebuild, write or score.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from model.heads import ElasticHead, LinearHead
from model.modes import state_kind
from model.modes.channels import LONG_TERM, REPEATS, SHORT_TERM
from model.ranker import Ranker
from model.states.base import Decay, UserState, advance
from model.states.elastic import ElasticSpec, ElasticState
from model.states.errors import StateError
from model.states.linear import LinearSpec, LinearState
from model.states.mean import MeanState
from model.states.svd.recent import RecentEvents
from model.states.svd.repeats import RepeatCounts
from model.states.svd.state import LowRankState
from model.states.weights import Embed, IntArray, elastic_spec, linear_spec, ranker_embed

__all__ = ["StateBuilder", "make_builder"]

Array = NDArray[np.float64]
_S = TypeVar("_S")


class StateBuilder(Protocol):
    """Creates and updates one kind of state for one model from events: item rows (N,) and
    action rows (N,) int64, times ts (N,) unix seconds (any order)."""

    @property
    def kind(self) -> str: ...

    @property
    def tag(self) -> str: ...

    def embed(self, items: IntArray, actions: IntArray) -> Array:
        """The event rows x_j (N, d), float64, through the model's tables."""
        ...

    def empty(self) -> UserState:
        """The state of a user with no history."""
        ...

    def from_events(self, items: IntArray, actions: IntArray, ts: Array) -> UserState:
        """The batch state of a whole history (the empty state for N = 0)."""
        ...

    def append(self, state: UserState, items: IntArray, actions: IntArray, ts: Array) -> UserState:
        """``state`` after one block of b ≥ 1 events (StateError for a state of another kind)."""
        ...

    def fits(self, state: UserState) -> bool:
        """Whether ``state`` has this builder's kind and shape (else: rebuild it)."""
        ...

    def features(self, state: UserState) -> Array:
        """What the scoring pass reads of ``state``: svd its live interest tokens (≤ r, d)
        then, for the hybrid, the rows of its latest events (≤ k, d), or (r, d) zeros with
        neither; elastic (k, d) dispatcher tokens; linear (H, d_h, d_h + 1) [S_h | z_h];
        mean the (d,) mean row."""
        ...

    def basis(self, state: UserState) -> Array:
        """The (d, r) right singular vectors `svd_exact` projects the history on (svd only:
        StateError for the kinds that keep none)."""
        ...

    def tokens(self, state: UserState) -> Array:
        """What `svd` attends to in ``state``: the svd features above, also of a `lifelong`
        state (its live tokens and window rows in one block, without the channel marks or
        the counts; StateError for the kinds that keep no factors)."""
        ...


def _own(state: UserState, cls: type[_S]) -> _S:
    """``state`` as the builder's kind; StateError if it is another (never a silent misuse)."""
    if not isinstance(state, cls):
        raise StateError(f"a {cls.__name__} builder was given a {state.kind} state")
    return state


class _FromEvents:
    """What a builder does with events: embed them (``embed``), then build its kind from the
    rows (``_from_rows``) or update a state with them (``_append``)."""

    embed: Embed

    def empty(self) -> UserState:
        raise NotImplementedError

    def _from_rows(self, rows: Array, ts: Array) -> UserState:
        raise NotImplementedError

    def _append(self, state: UserState, rows: Array, ts: Array) -> UserState:
        raise NotImplementedError

    def from_events(self, items: IntArray, actions: IntArray, ts: Array) -> UserState:
        if np.shape(ts)[0] == 0:
            return self.empty()
        return self._from_rows(self.embed(items, actions), ts)

    def append(self, state: UserState, items: IntArray, actions: IntArray, ts: Array) -> UserState:
        return self._append(state, self.embed(items, actions), ts)

    def basis(self, state: UserState) -> Array:
        raise StateError(f"{state.kind} states keep no singular vectors (svd_exact needs svd)")

    def tokens(self, state: UserState) -> Array:
        raise StateError(f"{state.kind} states keep no interest tokens (svd needs svd)")


@dataclass(frozen=True)
class SvdBuilder(_FromEvents):
    """The svd factors (rank r, ℓ = min(r + p, d)) and, for the hybrid (``recent_tokens`` =
    k > 0), the window of the k latest events, merged with every block."""

    embed: Embed
    dim: int
    rank: int
    oversample: int
    decay: Decay | None
    tag: str
    kind: str = "svd"
    recent_tokens: int = 0  # the hybrid's window of latest events (0: none)
    repeat_buckets: int = 0  # `lifelong`'s hashed item counts: K buckets a row (0: none)

    def empty(self) -> LowRankState:
        state = LowRankState.empty(self.dim, self.rank, self.oversample, self.tag)
        k, K = self.recent_tokens, self.repeat_buckets
        return dataclasses.replace(
            state,
            recent=RecentEvents.empty(k) if k else None,
            repeats=RepeatCounts.empty(K) if K else None,
        )

    def from_events(self, items: IntArray, actions: IntArray, ts: Array) -> UserState:
        state = super().from_events(items, actions, ts)
        return self._tracked(state, None, items, actions, ts)

    def append(self, state: UserState, items: IntArray, actions: IntArray, ts: Array) -> UserState:
        before = _own(state, LowRankState).t_ref
        return self._tracked(super().append(state, items, actions, ts), before, items, actions, ts)

    def _from_rows(self, rows: Array, ts: Array) -> LowRankState:
        return LowRankState.from_rows(
            rows, self.rank, oversample=self.oversample, ts=ts, decay=self.decay, tag=self.tag
        )

    def _append(self, state: UserState, rows: Array, ts: Array) -> LowRankState:
        return _own(state, LowRankState).append(rows, ts=ts, decay=self.decay)

    def _tracked(
        self,
        state: UserState,
        t_ref_before: float | None,
        items: IntArray,
        actions: IntArray,
        ts: Array,
    ) -> UserState:
        """``state`` (the factors after a block) with the block merged into its window of
        latest events and its item counts, weighed from ``t_ref_before`` (the state's t_ref
        before the block) on the factors' clock; each only where the model keeps it."""
        k, K, svd = self.recent_tokens, self.repeat_buckets, _own(state, LowRankState)
        if not (k or K) or np.shape(ts)[0] == 0:
            return svd
        recent, repeats = svd.recent, svd.repeats
        if k:
            window = RecentEvents.empty(k) if recent is None else recent
            recent = window.merged(items, actions, ts)
        if K:
            clock = advance(t_ref_before, np.asarray(ts, dtype=np.float64), self.decay)
            repeats = (RepeatCounts.empty(K) if repeats is None else repeats).merged(items, clock)
        return dataclasses.replace(svd, recent=recent, repeats=repeats)

    def features(self, state: UserState) -> Array:
        return SvdBuilder.tokens(self, state)

    def tokens(self, state: UserState) -> Array:
        tokens, rows = self._tokens_and_rows(_own(state, LowRankState))
        if not len(tokens) and not len(rows):
            # No history: (r, d) zeros, so o = 0 (the scorer masks padding up to the batch's r).
            return np.zeros((self.rank, self.dim))
        return np.concatenate((tokens, rows))  # the latest events join the live tokens

    def _tokens_and_rows(self, svd: LowRankState) -> tuple[Array, Array]:
        """The live interest tokens (live, d) and the rows of the window's events (k', d)."""
        tokens = svd.interests(self.rank)[: svd.live_rank(self.rank)]
        recent = svd.recent
        if recent is None or not len(recent):
            return tokens, np.zeros((0, self.dim))
        return tokens, self.embed(recent.items, recent.actions)

    def basis(self, state: UserState) -> Array:
        return np.ascontiguousarray(_own(state, LowRankState).V[:, : self.rank])  # (d, r)

    def fits(self, state: UserState) -> bool:
        """Same rank and shape, a window of latest events and item counts of the model's
        sizes (none for a plain svd model)."""
        if not isinstance(state, LowRankState):
            return False
        ell = min(self.rank + self.oversample, self.dim)
        window = 0 if state.recent is None else state.recent.capacity
        buckets = 0 if state.repeats is None else state.repeats.buckets
        return (state.rank, state.ell, state.d, window, buckets) == (
            self.rank,
            ell,
            self.dim,
            self.recent_tokens,
            self.repeat_buckets,
        )


@dataclass(frozen=True)
class LifelongBuilder(SvdBuilder):
    """`lifelong`: the svd state with its window of the L latest events (and, with
    ``repeat_buckets``, its hashed item counts); its features keep the channels apart
    (``model.modes.channels``)."""

    kind: str = "lifelong"

    def features(self, state: UserState) -> Array:
        """(live + L' + c, d + 1): the live interest tokens, the window's rows, then the item
        counts (H, K) flattened row-major into c = H·K / d rows (the config keeps H·K a
        multiple of d); the last column LONG_TERM, SHORT_TERM or REPEATS (no token or window
        rows for a user with no history; the counts' rows whenever the model keeps counts)."""
        svd = _own(state, LowRankState)
        tokens, rows = self._tokens_and_rows(svd)
        parts = [tokens, rows]
        marks = [np.full(len(tokens), LONG_TERM), np.full(len(rows), SHORT_TERM)]
        if self.repeat_buckets:
            counts = svd.repeats
            if counts is None:
                counts = RepeatCounts.empty(self.repeat_buckets)
            rows_of_d = counts.counts.reshape(-1, self.dim)
            parts.append(rows_of_d)
            marks.append(np.full(len(rows_of_d), REPEATS))
        return np.concatenate((np.concatenate(parts), np.concatenate(marks)[:, None]), axis=1)


@dataclass(frozen=True)
class ElasticBuilder(_FromEvents):
    embed: Embed
    spec: ElasticSpec
    decay: Decay | None
    tag: str
    kind: str = "elastic"

    def empty(self) -> ElasticState:
        return ElasticState.empty(self.spec, self.tag)

    def _from_rows(self, rows: Array, ts: Array) -> ElasticState:
        return ElasticState.from_rows(rows, ts, self.spec, self.decay, self.tag)

    def _append(self, state: UserState, rows: Array, ts: Array) -> ElasticState:
        return _own(state, ElasticState).append(rows, ts, self.spec, self.decay)

    def features(self, state: UserState) -> Array:
        return _own(state, ElasticState).tokens(self.spec)

    def fits(self, state: UserState) -> bool:
        spec = self.spec
        dims = (spec.heads, spec.tokens, spec.dim // spec.heads)
        return isinstance(state, ElasticState) and state.dims == dims


@dataclass(frozen=True)
class LinearBuilder(_FromEvents):
    embed: Embed
    spec: LinearSpec
    decay: Decay | None
    tag: str
    kind: str = "linear"

    def empty(self) -> LinearState:
        return LinearState.empty(self.spec, self.tag)

    def _from_rows(self, rows: Array, ts: Array) -> LinearState:
        return LinearState.from_rows(rows, ts, self.spec, self.decay, self.tag)

    def _append(self, state: UserState, rows: Array, ts: Array) -> LinearState:
        return _own(state, LinearState).append(rows, ts, self.spec, self.decay)

    def features(self, state: UserState) -> Array:
        return _own(state, LinearState).summary()

    def fits(self, state: UserState) -> bool:
        spec = self.spec
        return isinstance(state, LinearState) and state.z.shape == (
            spec.heads,
            spec.dim // spec.heads,
        )


@dataclass(frozen=True)
class MeanBuilder(_FromEvents):
    embed: Embed
    dim: int
    decay: Decay | None
    tag: str
    kind: str = "mean"

    def empty(self) -> MeanState:
        return MeanState.empty(self.dim, self.tag)

    def _from_rows(self, rows: Array, ts: Array) -> MeanState:
        return MeanState.from_rows(rows, ts, self.decay, self.tag)

    def _append(self, state: UserState, rows: Array, ts: Array) -> MeanState:
        return _own(state, MeanState).append(rows, ts, self.decay)

    def features(self, state: UserState) -> Array:
        return _own(state, MeanState).pooled()

    def fits(self, state: UserState) -> bool:
        return isinstance(state, MeanState) and state.s.shape == (self.dim,)


def make_builder(
    ranker: Ranker,
    *,
    rank: int,
    oversample: int,
    decay: Decay | None,
    tag: str,
    embed: Embed | None = None,
) -> StateBuilder:
    """The builder of the state a ranker trained in ``ranker.config.mode`` is served from;
    events are embedded by ``embed`` (default :func:`ranker_embed`)."""
    config = ranker.config
    embed = ranker_embed(ranker) if embed is None else embed
    kind = state_kind(config.mode)
    if kind == "elastic":
        elastic = cast(ElasticHead, ranker.baselines["elastic"])
        return ElasticBuilder(embed, elastic_spec(elastic.dispatcher, config.heads), decay, tag)
    if kind == "linear":
        linear = cast(LinearHead, ranker.baselines["linear"])
        return LinearBuilder(embed, linear_spec(linear.attention, config.heads), decay, tag)
    if kind == "mean":
        return MeanBuilder(embed, config.dim, decay, tag)
    svd = LifelongBuilder if kind == "lifelong" else SvdBuilder
    return svd(
        embed,
        config.dim,
        rank,
        oversample,
        decay,
        tag,
        kind,
        recent_tokens=config.recent_tokens,
        repeat_buckets=config.repeat_buckets,
    )
