"""The binary format of a user's low-rank state (DESIGN §4): versioned, little-endian, CRC32.

Layout: header (``_HEADER``), the UTF-8 state tag, σ (ℓ float32), V (d·ℓ float32, row-major),
s (d float32), CRC32 of everything before it. 12,787 bytes at d=64, ℓ=48 plus the tag,
whatever the history length. Decoding checks every field, so a truncated, corrupted,
wrong-version or non-finite blob raises :class:`StateFormatError` and never yields a state.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["DecodedState", "LowRankError", "StateFormatError", "decode_state", "encode_state"]

Array = NDArray[np.float64]

_MAGIC = b"SOLR"
_FORMAT_VERSION = 1
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
    header = _HEADER.pack(
        _MAGIC, _FORMAT_VERSION, d, ell, state.rank, flags, state.n, state.n_eff,
        state.t_ref if state.t_ref is not None else 0.0, state.residual, len(tag),
    )  # fmt: skip
    body = b"".join(
        (
            header,
            tag,
            state.sigma.astype("<f4").tobytes(),
            state.V.astype("<f4").tobytes(order="C"),
            state.s.astype("<f4").tobytes(),
        )
    )
    return body + _CRC.pack(zlib.crc32(body))


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
    if version != _FORMAT_VERSION:
        raise StateFormatError(f"unsupported state format version {version}")
    expected = _HEADER.size + tag_len + 4 * (ell + d * ell + d) + _CRC.size
    if len(blob) != expected:
        raise StateFormatError(f"state blob has {len(blob)} bytes, expected {expected}")
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
    )
