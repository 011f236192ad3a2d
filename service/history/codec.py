"""The segment codec: a run of 20-byte event records ↔ one compact, columnar blob.

A user's history is stored as segments; each segment's records are split into columns, each
stored the way its content compresses best:

========  ==================================================================================
column    encoding
========  ==================================================================================
ts        float64 → integer ticks (1 s, 1 ms or 1 µs, the coarsest that round-trips bit for
          bit; else the raw bit pattern); the first tick, then the gaps Rice-coded
          (``rice``; zigzag first when some gap is negative): a timestamp costs about the
          entropy of its gap (~2.2 B for minute-scale gaps in ms), not 8 bytes
item      dictionary: the segment's distinct 6-byte digests once (raw: they are random),
          then one index per event (1, 2 or 4 bytes, byte-shuffled, deflated)
action    one byte per event, deflated with the indexes (a fraction of a byte)
event_id  5 bytes per event, raw (random digests, incompressible; all zero when absent)
========  ==================================================================================

That costs ~10-20 µs per event for segments of a few events (numpy's per-call overhead), so
small appends are stored plain (``RAW``: the records as they are, 20 B per event, encoded in
no time) and compaction rewrites them in the compact format later.

Compact blob layout: ``FORMAT`` (1 byte), ``_HEADER`` (n, distinct items u, ts mode with the zigzag
flag in bit 7, index width, Rice k, first tick, deflated length), the raw-deflated
``indexes || actions``, the u items, the n event ids, the Rice remainder bits, the Rice
quotient bits. Decoding returns exactly the bytes that were encoded.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

from service.history.rice import rice_decode, rice_encode
from service.store.eventlog import EVENT_DTYPE, RECORD_SIZE, decode_log

__all__ = ["FORMAT", "RAW", "SegmentFormatError", "decode_segment", "encode_segment"]

FORMAT = 2
RAW = 0  # format byte of a plain segment: the 20-byte records follow as they are
_HEADER = struct.Struct("<IIBBBqI")
_ZIGZAG = 0x80  # flag in the ts mode byte: the gaps were zigzag-encoded (some were negative)
_RAW_BITS = 0  # ts mode 0: the float64 bit patterns; else ticks per second = _SCALES[mode]
_SCALES = {1: 1.0, 2: 1_000.0, 3: 1_000_000.0}
_LEVEL = 6  # zlib level: 9 saves < 1 % on these columns for twice the time


class SegmentFormatError(ValueError):
    """A stored segment that does not decode (wrong version, truncated, inconsistent)."""


def _shuffle(values: npt.NDArray[np.generic]) -> bytes:
    """Bytes of ``values`` (shape (n,)), byte-plane by byte-plane: (width, n) transposed."""
    width = values.dtype.itemsize
    return values.view(np.uint8).reshape(-1, width).T.tobytes()


def _unshuffle(data: bytes, dtype: np.dtype, n: int) -> npt.NDArray[np.generic]:
    planes = np.frombuffer(data, dtype=np.uint8).reshape(dtype.itemsize, n)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(n)


def _ticks(ts: npt.NDArray[np.float64]) -> tuple[int, npt.NDArray[np.int64]]:
    """(mode, int64 ticks) of the timestamps, shape (n,): the coarsest exact scale."""
    finite = bool(np.isfinite(ts).all()) and bool((np.abs(ts) < 2.0**52 / 1e6).all())
    for mode, scale in _SCALES.items():
        if not finite:
            break
        ticks = np.rint(ts * scale).astype(np.int64)
        if np.array_equal((ticks / scale).view(np.int64), ts.view(np.int64)):
            return mode, ticks
    return _RAW_BITS, ts.view(np.int64)


def _gaps(ticks: npt.NDArray[np.int64]) -> tuple[bool, npt.NDArray[np.uint64]]:
    """(zigzag?, unsigned gaps), shape (n - 1,); differences wrap, and so does decoding."""
    gaps = np.diff(ticks)
    if (gaps >= 0).all():
        return False, gaps.view(np.uint64)
    return True, ((gaps << 1) ^ (gaps >> 63)).view(np.uint64)


def _ticks_from_gaps(
    first: int, zigzag: bool, gaps: npt.NDArray[np.uint64]
) -> npt.NDArray[np.int64]:
    if zigzag:
        signed = (gaps >> np.uint64(1)).view(np.int64) ^ -(gaps & np.uint64(1)).view(np.int64)
    else:
        signed = gaps.view(np.int64)
    return np.cumsum(np.concatenate([[np.int64(first)], signed]), dtype=np.int64)


def _deflate(data: bytes) -> bytes:
    deflate = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)  # raw: no header or checksum
    return deflate.compress(data) + deflate.flush()


def encode_segment(records: bytes, *, compact: bool = True) -> bytes:
    """Concatenated 20-byte records (n ≥ 1) as one segment blob: compact, or plain (``RAW``).

    Raises:
        LogFormatError: ``len(records)`` is not a multiple of 20.
        ValueError: no records.
    """
    log = decode_log(records)  # (n,) EVENT_DTYPE
    n = log.shape[0]
    if n == 0:
        raise ValueError("a segment holds at least one event")
    if not compact:
        return bytes([RAW]) + records
    uniques, index = np.unique(log["item"].view("S6"), return_inverse=True)  # (u,), (n,)
    width = 1 if len(uniques) <= 1 << 8 else 2 if len(uniques) <= 1 << 16 else 4
    mode, ticks = _ticks(np.ascontiguousarray(log["ts"]))
    zigzag, gaps = _gaps(ticks)
    k, remainders, quotients = rice_encode(gaps)
    packed = _deflate(_shuffle(index.astype(f"<u{width}")) + log["action"].tobytes())
    mode_byte = mode | (_ZIGZAG if zigzag else 0)
    header = _HEADER.pack(n, len(uniques), mode_byte, width, k, int(ticks[0]), len(packed))
    event_ids = np.ascontiguousarray(log["event_id"]).tobytes()
    parts = [header, packed, uniques.tobytes(), event_ids, remainders, quotients]
    return bytes([FORMAT]) + b"".join(parts)


def decode_segment(blob: bytes) -> bytes:
    """The concatenated 20-byte records ``encode_segment`` compressed, byte for byte.

    Raises:
        SegmentFormatError: the blob is not a segment of this format.
    """
    if blob[:1] == bytes([RAW]) and len(blob) % RECORD_SIZE == 1:
        return blob[1:]
    if not blob or blob[0] != FORMAT:
        raise SegmentFormatError(f"unknown segment format {blob[:1]!r}")
    try:
        n, u, mode_byte, width, k, first, packed_len = _HEADER.unpack_from(blob, 1)
    except struct.error as exc:
        raise SegmentFormatError(f"corrupt segment: {exc}") from exc
    mode = mode_byte & ~_ZIGZAG
    sizes = [packed_len, 6 * u, 5 * n, -(-max(n - 1, 0) * k // 8)]
    ends = np.cumsum([1 + _HEADER.size, *sizes]).tolist()
    if mode not in (_RAW_BITS, *_SCALES) or width not in (1, 2, 4) or ends[-1] > len(blob):
        raise SegmentFormatError(f"corrupt segment: {len(blob)} bytes for {n} events")
    packed, items, event_id, remainders = (
        blob[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)
    )
    try:
        columns = zlib.decompress(packed, -15)
        gaps = rice_decode((k, remainders, blob[ends[-1] :]), max(n - 1, 0))
    except (zlib.error, ValueError) as exc:
        raise SegmentFormatError(f"corrupt segment: {exc}") from exc
    if len(columns) != (width + 1) * n:
        raise SegmentFormatError(f"corrupt segment: {len(columns)} column bytes for {n} events")
    index = _unshuffle(columns[: width * n], np.dtype(f"<u{width}"), n)
    if n and int(index.max()) >= u:
        raise SegmentFormatError("corrupt segment: item index out of range")
    ticks = _ticks_from_gaps(first, bool(mode_byte & _ZIGZAG), gaps)
    out = np.empty(n, dtype=EVENT_DTYPE)
    out["ts"] = ticks.view(np.float64) if mode == _RAW_BITS else ticks / _SCALES[mode]
    out["item"] = np.frombuffer(items, dtype="V6")[index]
    out["action"] = np.frombuffer(columns[width * n :], dtype=np.uint8)
    out["event_id"] = np.frombuffer(event_id, dtype="V5")
    return out.tobytes()
