"""Builders: each trained mode gets its kind of state, and the four operations agree."""

from __future__ import annotations

import numpy as np
import pytest

from model.lowrank import Decay
from model.modes import SERVING_MODES, served_modes, state_kind
from model.states import make_builder
from tests.model.states.support import events, ranker

SHAPES = {"svd": (32, 64), "elastic": (32, 64), "linear": (4, 16, 17), "mean": (64,)}


@pytest.mark.parametrize("mode", ["svd", "svd_exact", "softmax", "elastic", "linear", "mean"])
def test_each_mode_builds_its_kind(mode: str) -> None:
    builder = make_builder(ranker(mode), rank=32, oversample=16, decay=Decay(60.0), tag="t")
    kind = state_kind(mode)
    assert builder.kind == kind and builder.tag == "t"
    rows, ts = events(40, 1)
    batch = builder.from_rows(rows, ts)
    incremental = builder.append(builder.append(builder.empty(), rows[:25], ts[:25]), rows[25:],
                                 ts[25:])  # fmt: skip
    assert batch.kind == incremental.kind == kind and batch.tag == "t"
    assert builder.fits(batch) and builder.fits(builder.empty())
    features = builder.features(batch)
    assert features.shape == SHAPES[kind]
    np.testing.assert_allclose(
        np.abs(builder.features(incremental)) if kind == "svd" else builder.features(incremental),
        np.abs(features) if kind == "svd" else features,
        atol=1e-6,
    )
    assert served_modes(mode) == (SERVING_MODES if kind == "svd" else (mode,))


def test_a_state_of_another_kind_or_shape_does_not_fit() -> None:
    rows, ts = events(10, 2)
    svd = make_builder(ranker("svd"), rank=32, oversample=16, decay=None, tag="t")
    narrow = make_builder(ranker("svd"), rank=8, oversample=16, decay=None, tag="t")
    elastic = make_builder(ranker("elastic"), rank=32, oversample=16, decay=None, tag="t")
    small = make_builder(ranker("elastic", heads=2), rank=32, oversample=16, decay=None, tag="t")
    assert not svd.fits(elastic.from_rows(rows, ts))
    assert not elastic.fits(svd.from_rows(rows, ts))
    assert not narrow.fits(svd.empty())
    assert not small.fits(elastic.empty())
