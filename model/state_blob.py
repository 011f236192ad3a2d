"""The binary format of a user's low-rank state (DESIGN §4): versioned, little-endian, CRC32.

Layout: header (``_HEADER``), the UTF-8 state tag, σ (ℓ float32), V (d·ℓ float32, row-major),
s (d float32), CRC32 of everything before it. 12,787 bytes at d=64, ℓ=48 plus the tag,
whatever the history length. Format 2 (written only for a state with a recent-events window,
the `svd` hybrid) inserts before the CRC the window: capacity k and count n (uint16 each),
then n int32 item rows, n int32 action rows and n float64 times (16 bytes an event).
Decoding checks every field, so a truncated, corrupted, wrong-version or non-finite blob
raises :class:`StateFormatError` and never yields a state.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from model.recent import RecentEvents

__all__ = ["DecodedState", "LowRankError", "StateFormatError", "decode_state", "encode_state"]

Array = NDArray[np.float64]

_MAGIC = b"SOLR"
_FORMAT_VERSION = 1
_FORMAT_WITH_RECENT = 2
_RECENT_HEADER = struct.Struct("<HH")
# magic, format version, d, ell, rank, flags, n, n_eff, t_ref, residual, len(tag)
_HEADER = struct.Struct("<4sHHHHHQdddB")
_CRC = struct.Struct("<I")
_FLAG_HAS_T_REF = 1
_MAX_TAG_BYTES = 64


class LowRankError(ValueError):
    """Invalid input to a low-rank state operation (shape, finiteness, emptiness)."""


class StateFormatError(LowRankError):
    """A serialized state blob is truncated, corrupted or of an unknown version."""


class EncodableState(Protocol):
    """What :func:`encode_state` reads (``model.lowrank.LowRankState`` has it)."""

    @property
    def rank(self) -> int: ...
    @property
    def sigma(self) -> Array: ...
    @property
    def V(self) -> Array: ...
    @property
    def s(self) -> Array: ...
    @property
    def n_eff(self) -> float: ...
    @property
    def n(self) -> int: ...
    @property
    def t_ref(self) -> float | None: ...
    @property
    def residual(self) -> float: ...
    @property
    def tag(self) -> str: ...
    @property
    def recent(self) -> RecentEvents | None: ...


class DecodedState(NamedTuple):
    """The fields of a decoded blob, named as ``LowRankState``'s (``LowRankState(**d._asdict())``
    rebuilds the state)."""

    rank: int
    sigma: Array
    V: Array
    s: Array
    n_eff: float
    n: int
    t_ref: float | None
    residual: float
    tag: str
    recent: RecentEvents | None = None


def encode_state(state: EncodableState) -> bytes:
    """The blob of ``state``; its arrays are stored as float32.

    Raises:
        LowRankError: the tag is longer than 64 UTF-8 bytes.
    """
    tag = state.tag.encode("utf-8")
    if len(tag) > _MAX_TAG_BYTES:
        raise LowRankError(f"state tag longer than {_MAX_TAG_BYTES} bytes: {tag!r}")
    d, ell = state.V.shape
    flags = _FLAG_HAS_T_REF if state.t_ref is not None else 0
    recent = state.recent
    version = _FORMAT_VERSION if recent is None else _FORMAT_WITH_RECENT
    header = _HEADER.pack(
        _MAGIC, version, d, ell, state.rank, flags, state.n, state.n_eff,
        state.t_ref if state.t_ref is not None else 0.0, state.residual, len(tag),
    )  # fmt: skip
    body = b"".join(
        (
            header,
            tag,
            state.sigma.astype("<f4").tobytes(),
            state.V.astype("<f4").tobytes(order="C"),
            state.s.astype("<f4").tobytes(),
            b"" if recent is None else _encode_recent(recent),
        )
    )
    return body + _CRC.pack(zlib.crc32(body))


def _encode_recent(recent: RecentEvents) -> bytes:
    return b"".join(
        (
            _RECENT_HEADER.pack(recent.capacity, len(recent)),
            recent.items.astype("<i4").tobytes(),
            recent.actions.astype("<i4").tobytes(),
            recent.ts.astype("<f8").tobytes(),
        )
    )


def _decode_recent(blob: bytes, offset: int) -> RecentEvents:
    """The window at ``offset`` (it must run exactly to the CRC)."""
    if len(blob) < offset + _RECENT_HEADER.size + _CRC.size:
        raise StateFormatError("state blob truncated in its recent events")
    capacity, n = _RECENT_HEADER.unpack_from(blob, offset)
    offset += _RECENT_HEADER.size
    if len(blob) != offset + 16 * n + _CRC.size:
        raise StateFormatError(f"state blob has {len(blob)} bytes for {n} recent events")
    if not 1 <= capacity or n > capacity:
        raise StateFormatError(f"recent events: {n} kept of a capacity of {capacity}")
    items = np.frombuffer(blob, dtype="<i4", count=n, offset=offset).astype(np.int64)
    actions = np.frombuffer(blob, dtype="<i4", count=n, offset=offset + 4 * n).astype(np.int64)
    ts = np.frombuffer(blob, dtype="<f8", count=n, offset=offset + 8 * n).astype(np.float64)
    if np.any(items < 0) or np.any(actions < 0) or not np.all(np.isfinite(ts)):
        raise StateFormatError("recent events hold negative rows or non-finite times")
    if np.any(np.diff(ts) < 0):
        raise StateFormatError("recent events are not in time order")
    return RecentEvents(capacity, items, actions, ts)


def _check_length(size: int, version: int, expected: int) -> None:
    """The blob's size against its format: exactly ``expected`` bytes (format 1), or at least
    a recent-events header more (format 2, whose window ``_decode_recent`` checks)."""
    if version not in (_FORMAT_VERSION, _FORMAT_WITH_RECENT):
        raise StateFormatError(f"unsupported state format version {version}")
    if version == _FORMAT_VERSION and size != expected:
        raise StateFormatError(f"state blob has {size} bytes, expected {expected}")
    if version == _FORMAT_WITH_RECENT and size < expected + _RECENT_HEADER.size:
        raise StateFormatError(f"state blob has {size} bytes, too few for its format")


def decode_state(blob: bytes) -> DecodedState:
    """Inverse of :func:`encode_state` (arrays as float64); StateFormatError if malformed."""
    blob = bytes(blob)
    if len(blob) < _HEADER.size + _CRC.size:
        raise StateFormatError(f"state blob truncated: {len(blob)} bytes")
    if blob[:4] != _MAGIC:
        raise StateFormatError(f"not a solar state blob (magic {blob[:4]!r})")
    (_, version, d, ell, rank, flags, n, n_eff, t_ref, residual, tag_len) = _HEADER.unpack_from(
        blob
    )
    factors_end = _HEADER.size + tag_len + 4 * (ell + d * ell + d)
    _check_length(len(blob), version, factors_end + _CRC.size)
    body, (crc,) = blob[: -_CRC.size], _CRC.unpack(blob[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise StateFormatError("state blob checksum mismatch (corrupted)")
    if not (1 <= rank <= ell <= d):
        raise StateFormatError(f"inconsistent dimensions rank={rank} ell={ell} d={d}")
    off = _HEADER.size
    try:
        tag = blob[off : off + tag_len].decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise StateFormatError(f"state blob tag is not UTF-8: {exc}") from exc
    off += tag_len
    arrays = np.frombuffer(blob, dtype="<f4", count=ell + d * ell + d, offset=off)
    arrays = arrays.astype(np.float64)
    sigma, V, s = arrays[:ell], arrays[ell : ell + d * ell].reshape(d, ell), arrays[-d:]
    if not (np.all(np.isfinite(arrays)) and math.isfinite(n_eff) and math.isfinite(residual)):
        raise StateFormatError("state blob holds non-finite values")
    if n_eff < 0 or residual < 0 or np.any(sigma < 0):
        raise StateFormatError("state blob holds negative weights, energies or σ")
    recent = _decode_recent(blob, factors_end) if version == _FORMAT_WITH_RECENT else None
    return DecodedState(
        rank=rank,
        sigma=sigma.copy(),
        V=V.copy(),
        s=s.copy(),
        n_eff=n_eff,
        n=n,
        t_ref=t_ref if flags & _FLAG_HAS_T_REF else None,
        residual=residual,
        tag=tag,
        recent=recent,
    )
