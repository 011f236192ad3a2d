"""Family (version-3) blobs of every kind, svd blobs (versions 1, 2) beside them, corruption."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from model.lowrank import Decay, LowRankState
from model.recent import RecentEvents
from model.state_blob import LowRankError, StateFormatError
from model.states import ElasticState, LinearState, MeanState, UserState, decode_user_state
from model.states.blob import KIND_CODES, decode_blob, encode_blob
from model.states.builders import elastic_spec, linear_spec
from tests.model.states.support import HEADS, events, ranker


def _states() -> dict[str, UserState]:
    rows, ts = events(50, 0)
    decay = Decay(300.0)
    elastic = elastic_spec(ranker("elastic").baselines["elastic"].dispatcher, HEADS)
    linear = linear_spec(ranker("linear").baselines["linear"].attention, HEADS)
    return {
        "svd": LowRankState.from_rows(rows, 32, ts=ts, decay=decay, tag="m1@h300"),
        "elastic": ElasticState.from_rows(rows, ts, elastic, decay, tag="m1@h300"),
        "linear": LinearState.from_rows(rows, ts, linear, decay, tag="m1@h300"),
        "mean": MeanState.from_rows(rows, ts, decay, tag="m1@h300"),
    }


STATES = _states()
KINDS = tuple(STATES)


def _arrays(state: UserState) -> list[np.ndarray]:
    names = {"svd": ("sigma", "V", "s"), "elastic": ("m", "l", "a"), "linear": ("S", "z"),
             "mean": ("s",)}[state.kind]  # fmt: skip
    return [getattr(state, name) for name in names]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_keeps_every_field_to_float32(kind: str) -> None:
    state = STATES[kind]
    back = decode_user_state(state.to_bytes())
    assert type(back) is type(state) and back.kind == kind
    assert (back.n, back.t_ref, back.tag) == (state.n, state.t_ref, state.tag)
    assert back.n_eff == pytest.approx(state.n_eff, rel=1e-12)
    for got, want in zip(_arrays(back), _arrays(state), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert state.nbytes == len(state.to_bytes()) <= 16 * 1024


def test_svd_keeps_the_version_1_format() -> None:
    """States already stored (version 1) stay readable: the svd blob is unchanged."""
    blob = STATES["svd"].to_bytes()
    assert blob[:4] == b"SOLR" and int.from_bytes(blob[4:6], "little") == 1
    assert isinstance(LowRankState.from_bytes(blob), LowRankState)
    with pytest.raises(StateFormatError):
        LowRankState.from_bytes(STATES["elastic"].to_bytes())  # another kind is not svd
    window = RecentEvents.empty(4).merged(np.array([3, 1]), np.array([0, 2]), np.array([5.0, 6.0]))
    hybrid = replace(STATES["svd"], recent=window).to_bytes()  # the hybrid's version 2
    assert int.from_bytes(hybrid[4:6], "little") == 2
    back = decode_user_state(hybrid)
    assert isinstance(back, LowRankState) and back.recent is not None
    assert back.recent.items.tolist() == [3, 1]


def _resealed(blob: bytes, edit: Callable[[bytearray], None]) -> bytes:
    """``blob`` edited, with a fresh CRC (so the check under test is not the checksum)."""
    body = bytearray(blob[:-4])
    edit(body)
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def _set_version(body: bytearray) -> None:
    body[4:6] = (9).to_bytes(2, "little")


def _set_kind(body: bytearray) -> None:
    body[6] = 99


def _set_nan(body: bytearray) -> None:
    body[-4:] = struct.pack("<f", float("nan"))


def _set_dims(body: bytearray) -> None:
    body[32:34] = (7).to_bytes(2, "little")  # first dimension: the value count no longer fits


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b[:20],  # truncated into the header
        lambda b: b + b"\0",  # padded
        lambda b: b[:30] + bytes([b[30] ^ 0x40]) + b[31:],  # a flipped bit
        lambda b: b"XXXX" + b[4:],  # not a state blob
        lambda b: b"",
    ],
    ids=["truncated", "header", "padded", "flipped", "magic", "empty"],
)
def test_corrupted_blobs_are_refused(kind: str, corrupt: Callable[[bytes], bytes]) -> None:
    with pytest.raises(StateFormatError):
        decode_user_state(corrupt(STATES[kind].to_bytes()))


@pytest.mark.parametrize("kind", ["elastic", "linear", "mean"])
@pytest.mark.parametrize("edit", [_set_version, _set_kind, _set_nan, _set_dims])
def test_wrong_version_kind_values_or_dimensions_are_refused(
    kind: str, edit: Callable[[bytearray], None]
) -> None:
    blob = STATES[kind].to_bytes()
    decode_user_state(_resealed(blob, lambda body: None))  # the resealing itself is harmless
    with pytest.raises(StateFormatError):
        decode_user_state(_resealed(blob, edit))


def test_encoding_refuses_long_tags_and_non_finite_values() -> None:
    with pytest.raises(LowRankError):
        encode_blob("mean", 1, 1.0, None, (2, 0, 0), "x" * 65, np.zeros(2))
    with pytest.raises(LowRankError):
        encode_blob("mean", 1, 1.0, None, (2, 0, 0), "", np.array([1.0, 1e39]))  # f32 overflow
    blob = encode_blob("mean", 3, 2.5, None, (2, 0, 0), "t", np.array([1.0, 2.0]))
    decoded = decode_blob(blob)
    assert (decoded.kind, decoded.n, decoded.n_eff, decoded.t_ref, decoded.tag) == (
        "mean", 3, 2.5, None, "t",
    )  # fmt: skip
    assert set(KIND_CODES) == {"elastic", "linear", "mean"}
