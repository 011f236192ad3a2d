"""The state blob (``model.state_blob``): round trips through float32, every corruption refused."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.lowrank import Decay, LowRankState
from model.state_blob import LowRankError, StateFormatError
from tests.model.test_lowrank import D, R, low_rank_rows


def _state(n: int, seed: int = 0, **kwargs: object) -> LowRankState:
    rng = np.random.default_rng(seed)
    return LowRankState.from_rows(low_rank_rows(rng, n), R, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 100, 10_000])
def test_round_trip_through_float32(n: int) -> None:
    state = _state(n, ts=np.linspace(0.0, 9.0, n), decay=Decay(3.0), tag="abc123")
    blob = state.to_bytes()
    assert len(blob) <= 16 * 1024  # DESIGN §10, whatever N is
    assert len(blob) == len(_state(5).to_bytes()) + len("abc123")
    back = LowRankState.from_bytes(blob)
    assert (back.rank, back.ell, back.d, back.n) == (state.rank, state.ell, state.d, state.n)
    assert (back.n_eff, back.t_ref, back.residual) == (state.n_eff, state.t_ref, state.residual)
    assert back.tag == "abc123"
    np.testing.assert_allclose(back.sigma, state.sigma, rtol=1e-6)
    np.testing.assert_allclose(back.V, state.V, atol=1e-6)
    np.testing.assert_allclose(back.s, state.s, rtol=1e-6)
    np.testing.assert_allclose(back.interests(), state.interests(), atol=1e-6)
    assert back.to_bytes() == blob  # float32 values survive a second trip exactly
    assert back.append(np.ones(D)).n == n + 1  # a restored state keeps updating


def test_round_trip_without_t_ref() -> None:
    state = LowRankState.empty(D, R)
    back = LowRankState.from_bytes(state.to_bytes())
    assert back.t_ref is None and back.n == 0
    np.testing.assert_array_equal(back.V, state.V)


def _reseal(body: bytes) -> bytes:
    """A blob with a valid CRC over ``body`` (to reach the checks behind the checksum)."""
    return body + struct.pack("<I", zlib.crc32(body))


HEADER_SIZE = struct.calcsize("<4sHHHHHQdddB")


def test_corrupted_blobs_are_rejected() -> None:
    blob = _state(50, tag="v1").to_bytes()
    body = blob[:-4]
    cases = {
        "truncated": blob[:-1],
        "header only": blob[:HEADER_SIZE],
        "empty": b"",
        "magic": b"XXXX" + blob[4:],
        "version": _reseal(body[:4] + struct.pack("<H", 3) + body[6:]),
        "length": blob + b"\0",
        "crc": blob[:-4] + bytes([blob[-4] ^ 1]) + blob[-3:],
        "flipped byte": blob[:200] + bytes([blob[200] ^ 0x40]) + blob[201:],
        # σ_1 follows the header and the 2-byte tag; n_eff is at offset 22 of the header.
        "nan sigma": _reseal(
            body[: HEADER_SIZE + 2] + struct.pack("<f", math.nan) + body[HEADER_SIZE + 6 :]
        ),
        "inf n_eff": _reseal(body[:22] + struct.pack("<d", math.inf) + body[30:]),
        "rank > ell": _reseal(body[:10] + struct.pack("<H", 60) + body[12:]),
        "bad tag": _reseal(body[:HEADER_SIZE] + b"\xff\xfe" + body[HEADER_SIZE + 2 :]),
    }
    messages = {
        "magic": "magic",
        "version": "version",
        "length": "bytes",
        "crc": "checksum",
        "flipped byte": "checksum",
        "nan sigma": "non-finite",
        "inf n_eff": "non-finite",
        "rank > ell": "dimensions",
        "bad tag": "tag is not UTF-8",
    }
    for name, bad in cases.items():
        with pytest.raises(StateFormatError, match=messages.get(name, "truncated|bytes")):
            LowRankState.from_bytes(bad)


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_any_single_byte_corruption_or_truncation_is_detected(data: st.DataObject) -> None:
    blob = _state(20, tag="m").to_bytes()
    pos = data.draw(st.integers(0, len(blob) - 1))
    mask = data.draw(st.integers(1, 255))
    with pytest.raises(StateFormatError):
        LowRankState.from_bytes(blob[:pos] + bytes([blob[pos] ^ mask]) + blob[pos + 1 :])
    with pytest.raises(StateFormatError):
        LowRankState.from_bytes(blob[:pos])


def test_tag_is_bounded() -> None:
    with pytest.raises(LowRankError, match="state tag"):
        replace(_state(3), tag="x" * 65).to_bytes()


def _with_recent(n_recent: int) -> LowRankState:
    from model.recent import RecentEvents

    window = RecentEvents.empty(8).merged(
        np.arange(1, n_recent + 1), np.arange(n_recent) % 3, np.linspace(1.0, 2.0, n_recent)
    )
    return replace(_state(30, tag="hy"), recent=window)


@pytest.mark.parametrize("n_recent", [0, 3, 8])
def test_a_recent_events_window_round_trips_in_format_2(n_recent: int) -> None:
    state = _with_recent(n_recent)
    blob = state.to_bytes()
    assert struct.unpack_from("<H", blob, 4) == (2,)
    assert len(blob) == len(_state(30, tag="hy").to_bytes()) + 4 + 16 * n_recent
    back = LowRankState.from_bytes(blob).recent
    assert back is not None and state.recent is not None
    assert back.capacity == 8 and len(back) == n_recent
    np.testing.assert_array_equal(back.items, state.recent.items)
    np.testing.assert_array_equal(back.actions, state.recent.actions)
    np.testing.assert_array_equal(back.ts, state.recent.ts)
    assert LowRankState.from_bytes(_state(30).to_bytes()).recent is None  # format 1 as before


def test_a_corrupted_recent_events_window_is_rejected() -> None:
    blob = _with_recent(4).to_bytes()
    body = blob[:-4]
    end = len(body)  # the window: <HH> then 4 items, 4 actions, 4 times
    window = end - 4 - 16 * 4
    cases = {
        "truncated": _reseal(body[:-8]),
        "count": _reseal(body[: window + 2] + struct.pack("<H", 5) + body[window + 4 :]),
        "capacity": _reseal(body[:window] + struct.pack("<H", 2) + body[window + 2 :]),
        "order": _reseal(body[:-16] + body[-8:] + body[-16:-8]),
        "nan": _reseal(body[:-8] + struct.pack("<d", math.nan)),
        "negative": _reseal(body[: window + 4] + struct.pack("<i", -1) + body[window + 8 :]),
    }
    for name, bad in cases.items():
        with pytest.raises(StateFormatError):
            LowRankState.from_bytes(bad)
        assert name
