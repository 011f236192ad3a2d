"""The one binary codec of the user-state family (docs/DESIGN.md §4): versioned,
little-endian, CRC32.

Every kind is written in format 3: header (``_HEADER``: magic, version, kind code, flags, n,
n_eff, t_ref, three dimensions, len(tag)), the UTF-8 tag, then the optional sections the
flags announce: ρ, the energy a truncating kind dropped (float64; ``_FLAG_HAS_RESIDUAL``), and
the window of latest events (``_FLAG_HAS_WINDOW``: capacity k and count n as uint16, n int32
item rows, n int32 action rows, n float64 times, 16 bytes an event), the hashed item counts
of `lifelong` (``_FLAG_HAS_REPEATS``: rows H as uint16 and buckets K as uint32, then H·K
float32); then the kind's values
as float32 up to the CRC32 of everything before it. The svd factors are (d, ℓ, rank) and
σ (ℓ), V (d·ℓ, row-major), s (d): 39 + 8 + 4·(ℓ + d·ℓ + d) + 4 = 12,787 bytes at d=64, ℓ=48
plus the tag (+ 4 + 16·n with a window), the sizes formats 1 and 2 had.

Formats 1 and 2, written for the svd factors before format 3 held them, are still read byte
for byte, so states already stored stay readable: header (``_LEGACY_HEADER``: magic, version,
d, ℓ, rank, flags, n, n_eff, t_ref, ρ, len(tag)), the tag, σ, V, s as float32, in format 2
the window (laid out as above), CRC32.

Decoding checks magic, version, kind, length, checksum, the tag's encoding, that every value
is finite and that weights and energies are not negative, so a malformed blob raises
:class:`StateFormatError` and never yields a state; each kind then checks its value count
against its dimensions (:func:`expect_count`).
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from model.repeats import REPEAT_HASHES
from model.states.errors import StateError, StateFormatError
from model.states.svd.recent import RecentEvents
from model.states.svd.repeats import RepeatCounts

__all__ = [
    "FAMILY_VERSION",
    "KIND_CODES",
    "Blob",
    "blob_version",
    "decode_blob",
    "encode_blob",
    "expect_count",
    "expect_kind",
]

Array = NDArray[np.float64]

_MAGIC = b"SOLR"
_LEGACY_VERSION = 1  # svd factors
_LEGACY_WITH_WINDOW = 2  # svd factors and the hybrid's window
FAMILY_VERSION = 3  # every kind
# magic, format version, kind code, flags, n, n_eff, t_ref, dims (3 × u16), len(tag)
_HEADER = struct.Struct("<4sHBBQddHHHB")
# magic, format version, d, ell, rank, flags, n, n_eff, t_ref, residual, len(tag)
_LEGACY_HEADER = struct.Struct("<4sHHHHHQdddB")
_RESIDUAL = struct.Struct("<d")
_WINDOW_HEADER = struct.Struct("<HH")
_WINDOW_EVENT_BYTES = 16
_REPEATS_HEADER = struct.Struct("<HI")
_CRC = struct.Struct("<I")
_FLAG_HAS_T_REF = 1
_FLAG_HAS_RESIDUAL = 2
_FLAG_HAS_WINDOW = 4
_FLAG_HAS_REPEATS = 8
_MAX_TAG_BYTES = 64
_F32_MAX = float(np.finfo(np.float32).max)
# Codes of the kinds in the format-3 header (formats 1 and 2 are svd and carry no kind).
KIND_CODES: dict[str, int] = {"elastic": 1, "linear": 2, "mean": 3, "svd": 4}
_KINDS = {code: kind for kind, code in KIND_CODES.items()}


class Blob(NamedTuple):
    """The fields of a decoded blob, whatever its format.

    Attributes:
        kind: the state kind (``svd`` for formats 1 and 2).
        dims: the kind's three dimensions (svd: d, ℓ, rank).
        values: (count,) float64 (read from float32), in the kind's layout.
        residual: ρ of a truncating kind (0.0 when the blob holds none).
        window: the latest events it holds (the svd hybrid), or None.
        repeats: the hashed item counts it holds (`lifelong`'s repeat channel), or None.
    """

    kind: str
    n: int
    n_eff: float
    t_ref: float | None
    dims: tuple[int, int, int]
    tag: str
    values: Array
    residual: float = 0.0
    window: RecentEvents | None = None
    repeats: RepeatCounts | None = None


def blob_version(blob: bytes) -> int:
    """The format version of a state blob (StateFormatError if it is not one)."""
    if len(blob) < 6 or blob[:4] != _MAGIC:
        raise StateFormatError(f"not a solar state blob ({len(blob)} bytes, magic {blob[:4]!r})")
    return int.from_bytes(blob[4:6], "little")


# ----------------------------------------------------------------------------- encoding
def encode_blob(
    kind: str,
    n: int,
    n_eff: float,
    t_ref: float | None,
    dims: tuple[int, int, int],
    tag: str,
    values: Array,
    *,
    residual: float | None = None,
    window: RecentEvents | None = None,
    repeats: RepeatCounts | None = None,
) -> bytes:
    """The format-3 blob of one state; ``values`` are stored as float32, ``residual`` (None:
    the kind drops nothing) as float64.

    Raises:
        StateError: the tag is longer than 64 UTF-8 bytes, or a value is not finite.
    """
    raw_tag = tag.encode("utf-8")
    if len(raw_tag) > _MAX_TAG_BYTES:
        raise StateError(f"state tag longer than {_MAX_TAG_BYTES} bytes: {raw_tag!r}")
    wide = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = math.isfinite(n_eff) and (residual is None or math.isfinite(residual))
    if repeats is not None:
        finite = finite and bool(np.all(np.abs(repeats.counts) <= _F32_MAX))
    if not (np.all(np.abs(wide) <= _F32_MAX) and finite):  # NaN fails too
        raise StateError(f"{kind} state holds values that are not finite in float32")
    flags = (
        (_FLAG_HAS_T_REF if t_ref is not None else 0)
        | (_FLAG_HAS_RESIDUAL if residual is not None else 0)
        | (_FLAG_HAS_WINDOW if window is not None else 0)
        | (_FLAG_HAS_REPEATS if repeats is not None else 0)
    )
    header = _HEADER.pack(
        _MAGIC,
        FAMILY_VERSION,
        KIND_CODES[kind],
        flags,
        n,
        n_eff,
        t_ref if t_ref is not None else 0.0,
        *dims,
        len(raw_tag),
    )
    body = b"".join(
        (
            header,
            raw_tag,
            b"" if residual is None else _RESIDUAL.pack(residual),
            b"" if window is None else _encode_window(window),
            b"" if repeats is None else _encode_repeats(repeats),
            wide.astype("<f4").tobytes(),
        )
    )
    return body + _CRC.pack(zlib.crc32(body))


def _encode_window(window: RecentEvents) -> bytes:
    return b"".join(
        (
            _WINDOW_HEADER.pack(window.capacity, len(window)),
            window.items.astype("<i4").tobytes(),
            window.actions.astype("<i4").tobytes(),
            window.ts.astype("<f8").tobytes(),
        )
    )


def _encode_repeats(repeats: RepeatCounts) -> bytes:
    hashes, buckets = repeats.counts.shape
    return _REPEATS_HEADER.pack(hashes, buckets) + repeats.counts.astype("<f4").tobytes()


# ----------------------------------------------------------------------------- decoding
def decode_blob(blob: bytes) -> Blob:
    """Inverse of :func:`encode_blob`, and the reader of formats 1 and 2 (values as
    float64); StateFormatError if malformed."""
    blob = bytes(blob)
    version = blob_version(blob)
    if version == FAMILY_VERSION:
        return _decode_family(blob)
    if version in (_LEGACY_VERSION, _LEGACY_WITH_WINDOW):
        return _decode_legacy(blob, version)
    raise StateFormatError(f"unsupported state format version {version}")


def _check_crc(blob: bytes) -> None:
    body, (crc,) = blob[: -_CRC.size], _CRC.unpack(blob[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise StateFormatError("state blob checksum mismatch (corrupted)")


def _decode_tag(blob: bytes, offset: int, length: int) -> str:
    try:
        return blob[offset : offset + length].decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise StateFormatError(f"state blob tag is not UTF-8: {exc}") from exc


def _float32s(blob: bytes, offset: int, count: int) -> Array:
    return np.frombuffer(blob, dtype="<f4", count=count, offset=offset).astype(np.float64)


def _check_values(values: Array, n_eff: float, t_ref: float, residual: float) -> None:
    if not (np.all(np.isfinite(values)) and all(map(math.isfinite, (n_eff, t_ref, residual)))):
        raise StateFormatError("state blob holds non-finite values")
    if n_eff < 0 or residual < 0:
        raise StateFormatError(f"state blob holds a negative weight ({n_eff}) or energy")


def _decode_family(blob: bytes) -> Blob:
    if len(blob) < _HEADER.size + _CRC.size:
        raise StateFormatError(f"state blob truncated: {len(blob)} bytes")
    (_, _, code, flags, n, n_eff, t_ref, d0, d1, d2, tag_len) = _HEADER.unpack_from(blob)
    end = len(blob) - _CRC.size
    offset = _HEADER.size + tag_len
    if offset > end:
        raise StateFormatError(f"state blob has {len(blob)} bytes: truncated in its tag")
    residual = 0.0
    if flags & _FLAG_HAS_RESIDUAL:
        if offset + _RESIDUAL.size > end:
            raise StateFormatError("state blob truncated in its residual")
        (residual,) = _RESIDUAL.unpack_from(blob, offset)
        offset += _RESIDUAL.size
    window = None
    if flags & _FLAG_HAS_WINDOW:
        window, offset = _decode_window(blob, offset, end)
    repeats = None
    if flags & _FLAG_HAS_REPEATS:
        repeats, offset = _decode_repeats(blob, offset, end)
    payload = end - offset
    if payload % 4:
        raise StateFormatError(f"state blob has {len(blob)} bytes: truncated or padded")
    _check_crc(blob)
    if code not in _KINDS:
        raise StateFormatError(f"unknown state kind code {code}")
    tag = _decode_tag(blob, _HEADER.size, tag_len)
    values = _float32s(blob, offset, payload // 4)
    _check_values(values, n_eff, t_ref, residual)
    return Blob(
        kind=_KINDS[code],
        n=n,
        n_eff=n_eff,
        t_ref=t_ref if flags & _FLAG_HAS_T_REF else None,
        dims=(d0, d1, d2),
        tag=tag,
        values=values,
        residual=residual,
        window=window,
        repeats=repeats,
    )


def _decode_window(blob: bytes, offset: int, end: int) -> tuple[RecentEvents, int]:
    """The window at ``offset`` and the offset after it (at most ``end``)."""
    if offset + _WINDOW_HEADER.size > end:
        raise StateFormatError("state blob truncated in its recent events")
    capacity, n = _WINDOW_HEADER.unpack_from(blob, offset)
    offset += _WINDOW_HEADER.size
    if offset + _WINDOW_EVENT_BYTES * n > end:
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
    return RecentEvents(capacity, items, actions, ts), offset + _WINDOW_EVENT_BYTES * n


def _decode_repeats(blob: bytes, offset: int, end: int) -> tuple[RepeatCounts, int]:
    """The hashed item counts at ``offset`` and the offset after them (at most ``end``)."""
    if offset + _REPEATS_HEADER.size > end:
        raise StateFormatError("state blob truncated in its item counts")
    hashes, buckets = _REPEATS_HEADER.unpack_from(blob, offset)
    offset += _REPEATS_HEADER.size
    if hashes != REPEAT_HASHES or buckets < 1:
        raise StateFormatError(f"item counts of {hashes} rows of {buckets} buckets")
    if offset + 4 * hashes * buckets > end:
        raise StateFormatError(f"state blob has {len(blob)} bytes for {hashes}×{buckets} counts")
    counts = _float32s(blob, offset, hashes * buckets).reshape(hashes, buckets)
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise StateFormatError("item counts hold negative or non-finite values")
    return RepeatCounts(counts), offset + 4 * hashes * buckets


def _decode_legacy(blob: bytes, version: int) -> Blob:
    """Formats 1 and 2 (svd), checked as they always were."""
    if len(blob) < _LEGACY_HEADER.size + _CRC.size:
        raise StateFormatError(f"state blob truncated: {len(blob)} bytes")
    (_, _, d, ell, rank, flags, n, n_eff, t_ref, residual, tag_len) = _LEGACY_HEADER.unpack_from(
        blob
    )
    count = ell + d * ell + d
    factors_end = _LEGACY_HEADER.size + tag_len + 4 * count
    if version == _LEGACY_VERSION and len(blob) != factors_end + _CRC.size:
        raise StateFormatError(f"state blob has {len(blob)} bytes, expected {factors_end + 4}")
    if version == _LEGACY_WITH_WINDOW and len(blob) < factors_end + _WINDOW_HEADER.size + 4:
        raise StateFormatError(f"state blob has {len(blob)} bytes, too few for its format")
    _check_crc(blob)
    tag = _decode_tag(blob, _LEGACY_HEADER.size, tag_len)
    values = _float32s(blob, _LEGACY_HEADER.size + tag_len, count)
    _check_values(values, n_eff, t_ref, residual)
    window = None
    if version == _LEGACY_WITH_WINDOW:
        end = len(blob) - _CRC.size
        window, after = _decode_window(blob, factors_end, end)
        if after != end:  # format 2's window runs exactly to the CRC
            raise StateFormatError(f"state blob has {len(blob)} bytes for {len(window)} events")
    return Blob(
        kind="svd",
        n=n,
        n_eff=n_eff,
        t_ref=t_ref if flags & _FLAG_HAS_T_REF else None,
        dims=(d, ell, rank),
        tag=tag,
        values=values,
        residual=residual,
        window=window,
    )


def expect_kind(blob: Blob, kind: str) -> None:
    """StateFormatError unless the blob holds a state of ``kind``."""
    if blob.kind != kind:
        raise StateFormatError(f"a {blob.kind} state blob is not a {kind} state")


def expect_count(blob: Blob, count: int) -> None:
    """StateFormatError unless the blob holds ``count`` values (its kind's layout)."""
    if blob.values.shape[0] != count:
        raise StateFormatError(
            f"{blob.kind} state blob holds {blob.values.shape[0]} values, its dimensions "
            f"{blob.dims} need {count}"
        )
