"""Thousands of one-event updates, each through the float32 blob (as the applier stores them),
stay within 1e-5 of the batch state: the family states need no periodic rebuild."""

from __future__ import annotations

import numpy as np
import pytest

from model.states import Decay, ElasticState, LinearState
from model.states.weights import elastic_spec, linear_spec
from tests.model.states.support import HEADS, events, ranker

EVENTS = 2_000


@pytest.mark.parametrize("half_life_s", [None, 86_400.0])
def test_elastic_tokens_do_not_drift(half_life_s: float | None) -> None:
    spec = elastic_spec(ranker("elastic").baselines["elastic"].dispatcher, HEADS)
    decay = Decay(half_life_s) if half_life_s else None
    rows, _ = events(EVENTS, 8)
    ts = np.arange(EVENTS) * 30.0  # an event every 30 s, in order
    state = ElasticState.empty(spec)
    for j in range(EVENTS):
        state = ElasticState.from_bytes(state.to_bytes()).append(
            rows[j : j + 1], ts[j : j + 1], spec, decay
        )
    batch = ElasticState.from_rows(rows, ts, spec, decay).tokens(spec)
    np.testing.assert_allclose(state.tokens(spec), batch, atol=1e-5 * np.abs(batch).max())


@pytest.mark.parametrize("half_life_s", [None, 86_400.0])
def test_linear_sums_do_not_drift(half_life_s: float | None) -> None:
    spec = linear_spec(ranker("linear").baselines["linear"].attention, HEADS)
    decay = Decay(half_life_s) if half_life_s else None
    rows, _ = events(EVENTS, 9)
    ts = np.arange(EVENTS) * 30.0
    state = LinearState.empty(spec)
    for j in range(EVENTS):
        state = LinearState.from_bytes(state.to_bytes()).append(
            rows[j : j + 1], ts[j : j + 1], spec, decay
        )
    batch = LinearState.from_rows(rows, ts, spec, decay)
    np.testing.assert_allclose(state.S, batch.S, atol=1e-5 * np.abs(batch.S).max())
    np.testing.assert_allclose(state.z, batch.z, atol=1e-5 * np.abs(batch.z).max())
