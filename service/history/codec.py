"""The segment codec: a run of 20-byte event records ↔ one compressed, columnar blob.

A user's history is stored as segments; each segment's records are split into columns and
transformed so that a general-purpose compressor (zlib, stdlib) finds the redundancy a row
layout hides:

========  ==================================================================================
column    transform
========  ==================================================================================
ts        float64 → integer ticks (1 s, 1 ms or 1 µs, the coarsest that round-trips bit for
          bit; else the raw bit pattern), deltas, zigzag, byte-shuffled (all high bytes
          together): a timestamp costs the entropy of its gap, not 8 bytes
item      dictionary: the segment's distinct 6-byte digests once, then one index per event
          (1, 2 or 4 bytes, byte-shuffled): a re-visited item costs its index
action    one byte per event (few distinct values: compresses to a fraction of a byte)
event_id  5 bytes per event (random digests, incompressible; all zero when absent)
========  ==================================================================================

Blob layout: a 1-byte format version (``FORMAT``), then raw deflate (zlib without its 6-byte
wrapper: a segment's size is checked by decoding) of ``header || columns``;
``header`` is ``<IIBB``: events n, distinct items u, ts mode, index width. Decoding returns
exactly the bytes that were encoded.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

from service.store.eventlog import EVENT_DTYPE, decode_log

__all__ = ["FORMAT", "SegmentFormatError", "decode_segment", "encode_segment"]

FORMAT = 1
_HEADER = struct.Struct("<IIBB")
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


def _zigzag_deltas(values: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    deltas = np.diff(values, prepend=np.int64(0))  # wraps on overflow: decoding wraps back
    return ((deltas << 1) ^ (deltas >> 63)).view(np.uint64)


def _undo_zigzag_deltas(zigzag: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    deltas = (zigzag >> np.uint64(1)).view(np.int64) ^ -(zigzag & np.uint64(1)).view(np.int64)
    return np.cumsum(deltas, dtype=np.int64)


def _encode_ts(ts: npt.NDArray[np.float64]) -> tuple[int, bytes]:
    """(mode, shuffled zigzag deltas) of the timestamps, shape (n,)."""
    finite = bool(np.isfinite(ts).all()) and bool((np.abs(ts) < 2.0**52 / 1e6).all())
    for mode, scale in _SCALES.items():
        if not finite:
            break
        ticks = np.rint(ts * scale).astype(np.int64)
        if np.array_equal((ticks / scale).view(np.int64), ts.view(np.int64)):
            return mode, _shuffle(_zigzag_deltas(ticks))
    return _RAW_BITS, _shuffle(_zigzag_deltas(ts.view(np.int64)))


def _decode_ts(mode: int, data: bytes, n: int) -> npt.NDArray[np.float64]:
    values = _undo_zigzag_deltas(_unshuffle(data, np.dtype(np.uint64), n))  # type: ignore[arg-type]
    if mode == _RAW_BITS:
        return values.view(np.float64)
    return values / _SCALES[mode]


def encode_segment(records: bytes) -> bytes:
    """Compress concatenated 20-byte records (n ≥ 1) into one segment blob.

    Raises:
        LogFormatError: ``len(records)`` is not a multiple of 20.
        ValueError: no records.
    """
    log = decode_log(records)  # (n,) EVENT_DTYPE
    n = log.shape[0]
    if n == 0:
        raise ValueError("a segment holds at least one event")
    uniques, index = np.unique(log["item"].view("S6"), return_inverse=True)  # (u,), (n,)
    width = 1 if len(uniques) <= 1 << 8 else 2 if len(uniques) <= 1 << 16 else 4
    ts_mode, ts_bytes = _encode_ts(np.ascontiguousarray(log["ts"]))
    body = b"".join(
        [
            _HEADER.pack(n, len(uniques), ts_mode, width),
            ts_bytes,
            uniques.tobytes(),
            _shuffle(index.astype(f"<u{width}")),
            log["action"].tobytes(),
            np.ascontiguousarray(log["event_id"]).tobytes(),
        ]
    )
    deflate = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
    return bytes([FORMAT]) + deflate.compress(body) + deflate.flush()


def decode_segment(blob: bytes) -> bytes:
    """The concatenated 20-byte records ``encode_segment`` compressed, byte for byte.

    Raises:
        SegmentFormatError: the blob is not a segment of this format.
    """
    if not blob or blob[0] != FORMAT:
        raise SegmentFormatError(f"unknown segment format {blob[:1]!r}")
    try:
        body = zlib.decompress(blob[1:], -15)
        n, u, ts_mode, width = _HEADER.unpack_from(body)
    except (zlib.error, struct.error) as exc:
        raise SegmentFormatError(f"corrupt segment: {exc}") from exc
    sizes = [8 * n, 6 * u, width * n, n, 5 * n]
    if ts_mode not in (_RAW_BITS, *_SCALES) or _HEADER.size + sum(sizes) != len(body):
        raise SegmentFormatError(f"corrupt segment: {len(body)} bytes for {n} events")
    ends = np.cumsum([_HEADER.size, *sizes]).tolist()
    starts = ends[:-1]
    ts, items, index, action, event_id = (body[a:b] for a, b in zip(starts, ends[1:], strict=True))
    out = np.empty(n, dtype=EVENT_DTYPE)
    out["ts"] = _decode_ts(ts_mode, ts, n)
    index_values = _unshuffle(index, np.dtype(f"<u{width}"), n)
    if n and int(index_values.max()) >= u:
        raise SegmentFormatError("corrupt segment: item index out of range")
    out["item"] = np.frombuffer(items, dtype="V6")[index_values]
    out["action"] = np.frombuffer(action, dtype=np.uint8)
    out["event_id"] = np.frombuffer(event_id, dtype="V5")
    return out.tobytes()
