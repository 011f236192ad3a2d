"""The one state codec (``model.states.blob``): format 3 for every kind, the svd formats 1 and 2
of earlier releases still read byte for byte (golden blobs), every corruption refused."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.states import (
    Decay,
    ElasticState,
    LinearState,
    LowRankState,
    MeanState,
    RecentEvents,
    StateError,
    StateFormatError,
    UserState,
    decode_user_state,
)
from model.states.blob import KIND_CODES, decode_blob, encode_blob
from model.states.weights import elastic_spec, linear_spec
from tests.model.states.support import HEADS, events, legacy_blob, ranker
from tests.model.states.svd.test_state import D, R, low_rank_rows


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
    names = {
        "svd": ("sigma", "V", "s"),
        "elastic": ("m", "l", "a"),
        "linear": ("S", "z"),
        "mean": ("s",),
    }[state.kind]
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


def test_every_kind_is_written_in_format_3_with_its_kind_code() -> None:
    for kind, state in STATES.items():
        blob = state.to_bytes()
        assert blob[:4] == b"SOLR" and int.from_bytes(blob[4:6], "little") == 3
        assert blob[6] == KIND_CODES[kind] and decode_blob(blob).kind == kind
    with pytest.raises(StateFormatError, match="not a svd state"):
        LowRankState.from_bytes(STATES["elastic"].to_bytes())  # another kind is not svd
    with pytest.raises(StateFormatError, match="not a mean state"):
        MeanState.from_bytes(STATES["svd"].to_bytes())
    window = RecentEvents.empty(4).merged(np.array([3, 1]), np.array([0, 2]), np.array([5.0, 6.0]))
    hybrid = replace(STATES["svd"], recent=window).to_bytes()
    assert int.from_bytes(hybrid[4:6], "little") == 3
    assert len(hybrid) == len(STATES["svd"].to_bytes()) + 4 + 16 * 2  # 16 bytes an event
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


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("edit", [_set_version, _set_kind, _set_nan, _set_dims])
def test_wrong_version_kind_values_or_dimensions_are_refused(
    kind: str, edit: Callable[[bytearray], None]
) -> None:
    blob = STATES[kind].to_bytes()
    decode_user_state(_resealed(blob, lambda body: None))  # the resealing itself is harmless
    with pytest.raises(StateFormatError):
        decode_user_state(_resealed(blob, edit))


def test_encoding_refuses_long_tags_and_non_finite_values() -> None:
    with pytest.raises(StateError):
        encode_blob("mean", 1, 1.0, None, (2, 0, 0), "x" * 65, np.zeros(2))
    with pytest.raises(StateError):
        encode_blob("mean", 1, 1.0, None, (2, 0, 0), "", np.array([1.0, 1e39]))  # f32 overflow
    blob = encode_blob("mean", 3, 2.5, None, (2, 0, 0), "t", np.array([1.0, 2.0]))
    decoded = decode_blob(blob)
    assert (decoded.kind, decoded.n, decoded.n_eff, decoded.t_ref, decoded.tag) == (
        "mean",
        3,
        2.5,
        None,
        "t",
    )
    assert set(KIND_CODES) == {"svd", "elastic", "linear", "mean"}


# ------------------------------------------------------------------ svd: format 3
def _svd(n: int, seed: int = 0, **kwargs: object) -> LowRankState:
    rng = np.random.default_rng(seed)
    return LowRankState.from_rows(low_rank_rows(rng, n), R, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 100, 10_000])
def test_svd_round_trip_through_float32(n: int) -> None:
    state = _svd(n, ts=np.linspace(0.0, 9.0, n), decay=Decay(3.0), tag="abc123")
    blob = state.to_bytes()
    assert len(blob) <= 16 * 1024  # DESIGN §10, whatever N is
    assert len(blob) == len(_svd(5).to_bytes()) + len("abc123")
    # The size formats 1 and 2 had: header 39 B + ρ 8 B + float32 arrays + CRC 4 B.
    assert len(blob) == 51 + len("abc123") + 4 * (state.ell + D * state.ell + D)
    back = LowRankState.from_bytes(blob)
    assert (back.rank, back.ell, back.d, back.n) == (state.rank, state.ell, state.d, state.n)
    assert (back.n_eff, back.t_ref, back.residual) == (state.n_eff, state.t_ref, state.residual)
    assert back.tag == "abc123" and back.recent is None
    np.testing.assert_allclose(back.sigma, state.sigma, rtol=1e-6)
    np.testing.assert_allclose(back.V, state.V, atol=1e-6)
    np.testing.assert_allclose(back.s, state.s, rtol=1e-6)
    np.testing.assert_allclose(back.interests(), state.interests(), atol=1e-6)
    assert back.to_bytes() == blob  # float32 values survive a second trip exactly
    assert back.append(np.ones(D)).n == n + 1  # a restored state keeps updating


def test_svd_round_trip_without_t_ref() -> None:
    state = LowRankState.empty(D, R)
    back = LowRankState.from_bytes(state.to_bytes())
    assert back.t_ref is None and back.n == 0
    np.testing.assert_array_equal(back.V, state.V)


def _reseal(body: bytes) -> bytes:
    """A blob with a valid CRC over ``body`` (to reach the checks behind the checksum)."""
    return body + struct.pack("<I", zlib.crc32(body))


HEADER = struct.calcsize("<4sHBBQddHHHB")  # format 3
LEGACY_HEADER = struct.calcsize("<4sHHHHHQdddB")  # formats 1 and 2


def test_corrupted_svd_blobs_are_rejected() -> None:
    blob = _svd(50, tag="v1").to_bytes()
    body = blob[:-4]
    sigma_1 = HEADER + 2 + 8  # after the header, the 2-byte tag and ρ
    cases = {
        "truncated": blob[:-1],
        "header only": blob[:HEADER],
        "empty": b"",
        "magic": b"XXXX" + blob[4:],
        "version": _reseal(body[:4] + struct.pack("<H", 7) + body[6:]),
        "length": blob + b"\0",
        "crc": blob[:-4] + bytes([blob[-4] ^ 1]) + blob[-3:],
        "flipped byte": blob[:200] + bytes([blob[200] ^ 0x40]) + blob[201:],
        "nan sigma": _reseal(body[:sigma_1] + struct.pack("<f", math.nan) + body[sigma_1 + 4 :]),
        "inf n_eff": _reseal(body[:16] + struct.pack("<d", math.inf) + body[24:]),
        "negative ρ": _reseal(body[: HEADER + 2] + struct.pack("<d", -1.0) + body[HEADER + 10 :]),
        "rank > ell": _reseal(body[:36] + struct.pack("<H", 60) + body[38:]),
        "bad tag": _reseal(body[:HEADER] + b"\xff\xfe" + body[HEADER + 2 :]),
    }
    messages = {
        "magic": "magic",
        "version": "version",
        "length": "bytes",
        "crc": "checksum",
        "flipped byte": "checksum",
        "nan sigma": "non-finite",
        "inf n_eff": "non-finite",
        "negative ρ": "negative",
        "rank > ell": "dimensions",
        "bad tag": "tag is not UTF-8",
    }
    for name, bad in cases.items():
        with pytest.raises(StateFormatError, match=messages.get(name, "truncated|bytes")):
            LowRankState.from_bytes(bad)


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_any_single_byte_corruption_or_truncation_is_detected(data: st.DataObject) -> None:
    blob = _with_recent(3).to_bytes()
    pos = data.draw(st.integers(0, len(blob) - 1))
    mask = data.draw(st.integers(1, 255))
    with pytest.raises(StateFormatError):
        LowRankState.from_bytes(blob[:pos] + bytes([blob[pos] ^ mask]) + blob[pos + 1 :])
    with pytest.raises(StateFormatError):
        LowRankState.from_bytes(blob[:pos])


def test_tag_is_bounded() -> None:
    with pytest.raises(StateError, match="state tag"):
        replace(_svd(3), tag="x" * 65).to_bytes()


def _with_recent(n_recent: int) -> LowRankState:
    window = RecentEvents.empty(8).merged(
        np.arange(1, n_recent + 1), np.arange(n_recent) % 3, np.linspace(1.0, 2.0, n_recent)
    )
    return replace(_svd(30, tag="hy"), recent=window)


@pytest.mark.parametrize("n_recent", [0, 3, 8])
def test_a_recent_events_window_round_trips(n_recent: int) -> None:
    state = _with_recent(n_recent)
    blob = state.to_bytes()
    assert len(blob) == len(_svd(30, tag="hy").to_bytes()) + 4 + 16 * n_recent
    back = LowRankState.from_bytes(blob).recent
    assert back is not None and state.recent is not None
    assert back.capacity == 8 and len(back) == n_recent
    np.testing.assert_array_equal(back.items, state.recent.items)
    np.testing.assert_array_equal(back.actions, state.recent.actions)
    np.testing.assert_array_equal(back.ts, state.recent.ts)
    assert LowRankState.from_bytes(_svd(30).to_bytes()).recent is None  # no window, none back


def test_a_corrupted_recent_events_window_is_rejected() -> None:
    blob = _with_recent(4).to_bytes()
    body = blob[:-4]
    window = HEADER + len("hy") + 8  # the window: <HH> then 4 items, 4 actions, 4 times
    times = window + 4 + 8 * 4
    cases = {
        "count": _reseal(body[: window + 2] + struct.pack("<H", 9) + body[window + 4 :]),
        "capacity": _reseal(body[:window] + struct.pack("<H", 2) + body[window + 2 :]),
        "order": _reseal(
            body[:times]
            + body[times + 8 : times + 16]
            + body[times : times + 8]
            + body[times + 16 :]
        ),
        "nan": _reseal(body[:times] + struct.pack("<d", math.nan) + body[times + 8 :]),
        "negative": _reseal(body[: window + 4] + struct.pack("<i", -1) + body[window + 8 :]),
    }
    messages = {
        "count": "recent events",
        "capacity": "capacity",
        "order": "time order",
        "nan": "non-finite",
        "negative": "negative",
    }
    for name, bad in cases.items():
        with pytest.raises(StateFormatError, match=messages[name]):
            LowRankState.from_bytes(bad)


# ------------------------------------------------------------------ formats written before
# Blobs written by the code of main at 683b3d6 (before format 3 held the svd factors), from
# rows (5, 4) at d=4, rank 2, oversample 1 (ℓ = 3): V1_PLAIN without times or tag; V1_DECAY
# with decay (half-life 600 s), out-of-order times and an append; V2_WINDOW the same with a
# window of 3 latest events; V3_MEAN the mean state of the same events.
V1_PLAIN = bytes.fromhex(
    "534f4c5201000400030002000000050000000000000000000000000014400000000000000000f1a6826cbb6d"
    "074000ff964a404b032340e61b16404ccc4b3fa712d1bec8ffdd3e35f7ffbd29ad8c3d11844b3dd3121f3e80"
    "bf0abf1dec51bf0b47123ff9353b3f9696bdbe000040400000104000000000000040400dbfce0b"
)
V1_DECAY = bytes.fromhex(
    "534f4c520100040003000200010005000000000000002449cd887b0910400000008bfc54d94144fd13e99396"
    "0640076d314068363030b1822c4069c81440eab00040580b4a3f960511bf08a8343ec9e109beba4e773dba02"
    "b4bd69b4273ed2e0bfbd52f17abf428a133fd005513fc388863c5ebff83fa4e5e33f227e5dba9f6e2140b52c"
    "2216"
)
V2_WINDOW = bytes.fromhex(
    "534f4c520200040003000200010005000000000000002449cd887b0910400000008bfc54d94144fd13e99396"
    "0640076d314068363030b1822c4069c81440eab00040580b4a3f960511bf08a8343ec9e109beba4e773dba02"
    "b4bd69b4273ed2e0bfbd52f17abf428a133fd005513fc388863c5ebff83fa4e5e33f227e5dba9f6e21400300"
    "030009000000020000000400000002000000000000000100000000008047fc54d9410000004ffc54d9410000"
    "008bfc54d941417351b9"
)
V3_MEAN = bytes.fromhex(
    "534f4c520300030105000000000000002449cd887b0910400000008bfc54d941040000000000076d31406836"
    "30305ebff83fa4e5e33f227e5dba9f6e2140d55f7bfe"
)
PLAIN_SIGMA = np.float32([3.165466, 2.547076, 2.3454528])
PLAIN_V = np.float32(
    [
        [0.7960861, -0.40834543, 0.43359208],
        [-0.12498323, 0.06868965, 0.049686495],
        [0.15534525, -0.54198456, -0.82000905],
        [0.5713965, 0.7312923, -0.3702895],
    ]
)
DECAY_SIGMA = np.float32([2.6954768, 2.324732, 2.010798])
DECAY_V = np.float32(
    [
        [0.7892356, -0.5664915, 0.17642224],
        [-0.13465036, 0.060377814, -0.087895826],
        [0.16377415, -0.09369053, -0.98024476],
        [0.5763284, 0.81649494, 0.016422635],
    ]
)
DECAY_S = np.float32([1.9433401, 1.7804456, -8.4492762e-04, 2.5223768])
DECAY_FIELDS = (4.009260308770795, 1700000300.0, 2.8235243043160683, "m1@h600")


def _expect_svd(state: UserState, sigma: np.ndarray, V: np.ndarray, s: np.ndarray) -> LowRankState:
    assert isinstance(state, LowRankState)
    assert (state.rank, state.ell, state.d, state.n) == (2, 3, 4, 5)
    np.testing.assert_array_equal(state.sigma, sigma.astype(np.float64))
    np.testing.assert_array_equal(state.V, V.astype(np.float64))
    np.testing.assert_array_equal(state.s, s.astype(np.float64))
    return state


def test_format_1_blobs_still_decode_to_the_same_arrays() -> None:
    plain_s = np.float32([3.0, 2.25, 0.0, 3.0])
    plain = _expect_svd(decode_user_state(V1_PLAIN), PLAIN_SIGMA, PLAIN_V, plain_s)
    assert (plain.n_eff, plain.t_ref, plain.residual, plain.tag) == (
        5.0,
        None,
        2.9285801389095174,
        "",
    )
    assert plain.recent is None
    decayed = _expect_svd(LowRankState.from_bytes(V1_DECAY), DECAY_SIGMA, DECAY_V, DECAY_S)
    assert (decayed.n_eff, decayed.t_ref, decayed.residual, decayed.tag) == DECAY_FIELDS
    assert decayed.recent is None


def test_format_2_blobs_still_decode_to_the_same_arrays_and_window() -> None:
    state = _expect_svd(decode_user_state(V2_WINDOW), DECAY_SIGMA, DECAY_V, DECAY_S)
    assert (state.n_eff, state.t_ref, state.residual, state.tag) == DECAY_FIELDS
    assert state.recent is not None and state.recent.capacity == 3
    assert state.recent.items.tolist() == [9, 2, 4] and state.recent.actions.tolist() == [2, 0, 1]
    assert state.recent.ts.tolist() == [1700000030.0, 1700000060.0, 1700000300.0]


@pytest.mark.parametrize("old", [V1_PLAIN, V1_DECAY, V2_WINDOW], ids=["v1", "v1-decay", "v2"])
def test_an_old_svd_blob_rewritten_in_format_3_keeps_every_field_and_its_size(old: bytes) -> None:
    state = LowRankState.from_bytes(old)
    blob = state.to_bytes()
    assert int.from_bytes(blob[4:6], "little") == 3 and len(blob) == len(old)
    back = LowRankState.from_bytes(blob)
    for name in ("rank", "n", "n_eff", "t_ref", "residual", "tag"):
        assert getattr(back, name) == getattr(state, name), name
    for name in ("sigma", "V", "s"):
        np.testing.assert_array_equal(getattr(back, name), getattr(state, name))
    assert (back.recent is None) == (state.recent is None)
    if state.recent is not None and back.recent is not None:
        np.testing.assert_array_equal(back.recent.items, state.recent.items)
        np.testing.assert_array_equal(back.recent.ts, state.recent.ts)


@pytest.mark.parametrize("old", [V1_PLAIN, V1_DECAY, V2_WINDOW], ids=["v1", "v1-decay", "v2"])
def test_the_legacy_writer_of_the_tests_reproduces_the_golden_blobs(old: bytes) -> None:
    """``legacy_blob`` (what service tests store as "written by the previous release")."""
    assert legacy_blob(LowRankState.from_bytes(old)) == old


def test_format_3_blobs_of_the_other_kinds_are_read_and_written_byte_for_byte() -> None:
    state = decode_user_state(V3_MEAN)
    assert isinstance(state, MeanState)
    np.testing.assert_array_equal(state.s, DECAY_S.astype(np.float64))
    assert (state.n, state.n_eff, state.t_ref, state.tag) == (5, *DECAY_FIELDS[:2], "m1@h600")
    assert state.to_bytes() == V3_MEAN


def test_corrupted_format_1_and_2_blobs_are_rejected() -> None:
    body, window = V1_DECAY[:-4], V2_WINDOW[:-4]
    sigma_1 = LEGACY_HEADER + len("m1@h600")
    cases = {
        "truncated": V1_DECAY[:-1],
        "padded": _reseal(body + b"\0"),
        "crc": V1_DECAY[:-4] + bytes([V1_DECAY[-4] ^ 1]) + V1_DECAY[-3:],
        "rank > ell": _reseal(body[:10] + struct.pack("<H", 4) + body[12:]),
        "nan sigma": _reseal(body[:sigma_1] + struct.pack("<f", math.nan) + body[sigma_1 + 4 :]),
        "bad tag": _reseal(body[:LEGACY_HEADER] + b"\xff" + body[LEGACY_HEADER + 1 :]),
        "window too long": _reseal(window + b"\0" * 16),
        "window order": _reseal(window[:-16] + window[-8:] + window[-16:-8]),
    }
    messages = {
        "truncated": "bytes",
        "padded": "bytes",
        "crc": "checksum",
        "rank > ell": "dimensions",
        "nan sigma": "non-finite",
        "bad tag": "UTF-8",
        "window too long": "bytes",
        "window order": "time order",
    }
    for name, bad in cases.items():
        with pytest.raises(StateFormatError, match=messages[name]):
            decode_user_state(bad)
