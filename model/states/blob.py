"""The versioned blob of the compressed-state family (DESIGN §4), shared by every kind but svd.

Versions 1 and 2 are the svd factors' layouts (``model.state_blob``: 2 adds the hybrid's
recent events), still written and read as they are, so states already in Redis stay
readable. Version 3, written here, is one layout for every other kind: header (``_HEADER``:
magic, version, kind code, flags, n, n_eff, t_ref, three dimensions, len(tag)), the UTF-8
tag, the kind's float32 values (little-endian), CRC32 of everything before it. Decoding
checks magic, version, kind, length, checksum, the tag's encoding and that every value is
finite, so a malformed blob raises :class:`StateFormatError` and never yields a state; each
kind then checks its value count against its dimensions.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from model.state_blob import LowRankError, StateFormatError

__all__ = ["FAMILY_VERSION", "KIND_CODES", "Blob", "blob_version", "decode_blob", "encode_blob"]

Array = NDArray[np.float64]

_MAGIC = b"SOLR"
FAMILY_VERSION = 3
# magic, format version, kind code, flags, n, n_eff, t_ref, dims (3 × u16), len(tag)
_HEADER = struct.Struct("<4sHBBQddHHHB")
_CRC = struct.Struct("<I")
_FLAG_HAS_T_REF = 1
_MAX_TAG_BYTES = 64
_F32_MAX = float(np.finfo(np.float32).max)
# Codes of the kinds in the family header (svd blobs, versions 1 and 2, carry no kind).
KIND_CODES: dict[str, int] = {"elastic": 1, "linear": 2, "mean": 3}
_KINDS = {code: kind for kind, code in KIND_CODES.items()}


class Blob(NamedTuple):
    """The fields of a family (version-3) blob; ``values`` (count,) float64, in the kind's
    layout."""

    kind: str
    n: int
    n_eff: float
    t_ref: float | None
    dims: tuple[int, int, int]
    tag: str
    values: Array


def blob_version(blob: bytes) -> int:
    """The format version of a state blob (StateFormatError if it is not one)."""
    if len(blob) < 6 or blob[:4] != _MAGIC:
        raise StateFormatError(f"not a solar state blob ({len(blob)} bytes, magic {blob[:4]!r})")
    return int.from_bytes(blob[4:6], "little")


def encode_blob(
    kind: str, n: int, n_eff: float, t_ref: float | None, dims: tuple[int, int, int],
    tag: str, values: Array,
) -> bytes:  # fmt: skip
    """The family (version-3) blob of one state; ``values`` are stored as float32.

    Raises:
        LowRankError: the tag is longer than 64 UTF-8 bytes, or values are not finite.
    """
    raw_tag = tag.encode("utf-8")
    if len(raw_tag) > _MAX_TAG_BYTES:
        raise LowRankError(f"state tag longer than {_MAX_TAG_BYTES} bytes: {raw_tag!r}")
    wide = np.asarray(values, dtype=np.float64).reshape(-1)
    if not (np.all(np.abs(wide) <= _F32_MAX) and math.isfinite(n_eff)):  # NaN fails too
        raise LowRankError(f"{kind} state holds values that are not finite in float32")
    packed = wide.astype("<f4")
    flags = _FLAG_HAS_T_REF if t_ref is not None else 0
    header = _HEADER.pack(
        _MAGIC, FAMILY_VERSION, KIND_CODES[kind], flags, n, n_eff,
        t_ref if t_ref is not None else 0.0, *dims, len(raw_tag),
    )  # fmt: skip
    body = header + raw_tag + packed.tobytes()
    return body + _CRC.pack(zlib.crc32(body))


def decode_blob(blob: bytes) -> Blob:
    """Inverse of :func:`encode_blob` (values as float64); StateFormatError if malformed."""
    blob = bytes(blob)
    if len(blob) < _HEADER.size + _CRC.size:
        raise StateFormatError(f"state blob truncated: {len(blob)} bytes")
    version = blob_version(blob)
    if version != FAMILY_VERSION:
        raise StateFormatError(f"unsupported state format version {version}")
    (_, _, code, flags, n, n_eff, t_ref, d0, d1, d2, tag_len) = _HEADER.unpack_from(blob)
    payload = len(blob) - _HEADER.size - tag_len - _CRC.size
    if payload < 0 or payload % 4:
        raise StateFormatError(f"state blob has {len(blob)} bytes: truncated or padded")
    body, (crc,) = blob[: -_CRC.size], _CRC.unpack(blob[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise StateFormatError("state blob checksum mismatch (corrupted)")
    if code not in _KINDS:
        raise StateFormatError(f"unknown state kind code {code}")
    try:
        tag = blob[_HEADER.size : _HEADER.size + tag_len].decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise StateFormatError(f"state blob tag is not UTF-8: {exc}") from exc
    values = np.frombuffer(blob, dtype="<f4", count=payload // 4, offset=_HEADER.size + tag_len)
    values = values.astype(np.float64)
    if not (np.all(np.isfinite(values)) and math.isfinite(n_eff) and math.isfinite(t_ref)):
        raise StateFormatError("state blob holds non-finite values")
    if n_eff < 0:
        raise StateFormatError(f"state blob holds a negative weight n_eff={n_eff}")
    return Blob(
        kind=_KINDS[code],
        n=n,
        n_eff=n_eff,
        t_ref=t_ref if flags & _FLAG_HAS_T_REF else None,
        dims=(d0, d1, d2),
        tag=tag,
        values=values,
    )


def expect_count(blob: Blob, count: int) -> None:
    """StateFormatError unless the blob holds ``count`` values (its kind's layout)."""
    if blob.values.shape[0] != count:
        raise StateFormatError(
            f"{blob.kind} state blob holds {blob.values.shape[0]} values, its dimensions "
            f"{blob.dims} need {count}"
        )
