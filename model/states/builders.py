"""Builders of each state kind, bound to a model's weights, decay and tag.

A state of the `elastic` or `linear` kind depends on the model's projections, so it is built
and updated through a builder holding them (frozen float64 copies, made once per loaded
model); the svd and mean builders hold only sizes. Every builder offers the same four
operations, so the service never branches on the kind to load, apply, rebuild or write.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import torch
from numpy.typing import NDArray

from model.heads import ElasticHead, LinearHead
from model.layers import ElasticDispatcher, LinearTargetAttention
from model.lowrank import Decay, LowRankState
from model.modes import state_kind
from model.ranker import Ranker
from model.recent import RecentEvents
from model.states.base import UserState
from model.states.elastic import ElasticSpec, ElasticState
from model.states.linear import LinearSpec, LinearState
from model.states.mean import MeanState

__all__ = ["StateBuilder", "elastic_spec", "linear_spec", "make_builder"]

Array = NDArray[np.float64]


class StateBuilder(Protocol):
    """Creates and updates one kind of state for one model (rows (N, d), ts (N,) seconds)."""

    @property
    def kind(self) -> str: ...

    @property
    def tag(self) -> str: ...

    def empty(self) -> UserState: ...

    def from_rows(self, rows: Array, ts: Array) -> UserState: ...

    def append(self, state: UserState, rows: Array, ts: Array) -> UserState: ...

    def fits(self, state: UserState) -> bool:
        """Whether ``state`` has this builder's kind and shape (else: rebuild it)."""
        ...

    def features(self, state: UserState) -> Array:
        """What the scoring pass reads of ``state``: svd (r, d) interest tokens, elastic (k, d)
        dispatcher tokens, linear (H, d_h, d_h + 1) [S_h | z_h], mean the (d,) mean row."""
        ...


def _np(weight: torch.Tensor) -> Array:
    return weight.detach().to(device="cpu", dtype=torch.float64).numpy().copy()


def elastic_spec(dispatcher: ElasticDispatcher, heads: int) -> ElasticSpec:
    """The :class:`ElasticSpec` of a ``model.layers.ElasticDispatcher``."""
    attn = dispatcher.dispatch
    q = _np(dispatcher.queries) @ _np(attn.w_q.weight).T  # (k, d)
    k, d = q.shape
    dh = d // heads
    queries = q.reshape(k, heads, dh).transpose(1, 0, 2) / math.sqrt(dh)  # (H, k, d_h)
    return ElasticSpec(
        np.ascontiguousarray(queries),
        _np(attn.w_k.weight).T.copy(), _np(attn.w_v.weight).T.copy(), _np(attn.w_o.weight).T.copy(),
    )  # fmt: skip


def linear_spec(attention: LinearTargetAttention, heads: int) -> LinearSpec:
    """The :class:`LinearSpec` of a ``model.layers.LinearTargetAttention``."""
    return LinearSpec(_np(attention.w_k.weight).T.copy(), _np(attention.w_v.weight).T.copy(), heads)


@dataclass(frozen=True)
class SvdBuilder:
    dim: int
    rank: int
    oversample: int
    decay: Decay | None
    tag: str
    kind: str = "svd"
    recent_tokens: int = 0  # the hybrid's window of latest events (0: none)

    def empty(self) -> LowRankState:
        state = LowRankState.empty(self.dim, self.rank, self.oversample, self.tag)
        k = self.recent_tokens
        return dataclasses.replace(state, recent=RecentEvents.empty(k)) if k else state

    def from_rows(self, rows: Array, ts: Array) -> LowRankState:
        return LowRankState.from_rows(
            rows, self.rank, oversample=self.oversample, ts=ts, decay=self.decay, tag=self.tag
        )

    def append(self, state: UserState, rows: Array, ts: Array) -> LowRankState:
        assert isinstance(state, LowRankState)
        return state.append(rows, ts=ts, decay=self.decay)

    def features(self, state: UserState) -> Array:
        assert isinstance(state, LowRankState)
        return state.interests(self.rank)

    def fits(self, state: UserState) -> bool:
        """Same rank and shape, and a window of latest events of the model's size (none for
        a plain svd model)."""
        if not isinstance(state, LowRankState):
            return False
        ell = min(self.rank + self.oversample, self.dim)
        window = 0 if state.recent is None else state.recent.capacity
        return (state.rank, state.ell, state.d, window) == (
            self.rank, ell, self.dim, self.recent_tokens,
        )  # fmt: skip


@dataclass(frozen=True)
class ElasticBuilder:
    spec: ElasticSpec
    decay: Decay | None
    tag: str
    kind: str = "elastic"

    def empty(self) -> ElasticState:
        return ElasticState.empty(self.spec, self.tag)

    def from_rows(self, rows: Array, ts: Array) -> ElasticState:
        return ElasticState.from_rows(rows, ts, self.spec, self.decay, self.tag)

    def append(self, state: UserState, rows: Array, ts: Array) -> ElasticState:
        assert isinstance(state, ElasticState)
        return state.append(rows, ts, self.spec, self.decay)

    def features(self, state: UserState) -> Array:
        assert isinstance(state, ElasticState)
        return state.tokens(self.spec)

    def fits(self, state: UserState) -> bool:
        spec = self.spec
        dims = (spec.heads, spec.tokens, spec.dim // spec.heads)
        return isinstance(state, ElasticState) and state.dims == dims


@dataclass(frozen=True)
class LinearBuilder:
    spec: LinearSpec
    decay: Decay | None
    tag: str
    kind: str = "linear"

    def empty(self) -> LinearState:
        return LinearState.empty(self.spec, self.tag)

    def from_rows(self, rows: Array, ts: Array) -> LinearState:
        return LinearState.from_rows(rows, ts, self.spec, self.decay, self.tag)

    def append(self, state: UserState, rows: Array, ts: Array) -> LinearState:
        assert isinstance(state, LinearState)
        return state.append(rows, ts, self.spec, self.decay)

    def features(self, state: UserState) -> Array:
        assert isinstance(state, LinearState)
        return state.summary()

    def fits(self, state: UserState) -> bool:
        spec = self.spec
        return isinstance(state, LinearState) and state.z.shape == (
            spec.heads, spec.dim // spec.heads,
        )  # fmt: skip


@dataclass(frozen=True)
class MeanBuilder:
    dim: int
    decay: Decay | None
    tag: str
    kind: str = "mean"

    def empty(self) -> MeanState:
        return MeanState.empty(self.dim, self.tag)

    def from_rows(self, rows: Array, ts: Array) -> MeanState:
        return MeanState.from_rows(rows, ts, self.decay, self.tag)

    def append(self, state: UserState, rows: Array, ts: Array) -> MeanState:
        assert isinstance(state, MeanState)
        return state.append(rows, ts, self.decay)

    def features(self, state: UserState) -> Array:
        assert isinstance(state, MeanState)
        return state.pooled()

    def fits(self, state: UserState) -> bool:
        return isinstance(state, MeanState) and state.s.shape == (self.dim,)


def make_builder(
    ranker: Ranker, *, rank: int, oversample: int, decay: Decay | None, tag: str
) -> StateBuilder:
    """The builder of the state a ranker trained in ``ranker.config.mode`` is served from."""
    config = ranker.config
    kind = state_kind(config.mode)
    if kind == "elastic":
        elastic = cast(ElasticHead, ranker.baselines["elastic"])
        return ElasticBuilder(elastic_spec(elastic.dispatcher, config.heads), decay, tag)
    if kind == "linear":
        linear = cast(LinearHead, ranker.baselines["linear"])
        return LinearBuilder(linear_spec(linear.attention, config.heads), decay, tag)
    if kind == "mean":
        return MeanBuilder(config.dim, decay, tag)
    return SvdBuilder(config.dim, rank, oversample, decay, tag, recent_tokens=config.recent_tokens)
