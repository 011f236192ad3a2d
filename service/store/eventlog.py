"""Compact event-log records: 20 bytes per event, little-endian.

Layout of one record (``EVENT_DTYPE``, itemsize 20, no padding):

========  =======  ===========================================================
offset    field    meaning
========  =======  ===========================================================
0..7      ts       event time, unix seconds, float64 little-endian
8..13     item     6-byte blake2b digest of ``str(item_id)`` (``item_key``)
14        action   0 for no action, else 1..255 (``action_key``)
15..19    event_id 5-byte blake2b digest of the event id, all zero when absent
========  =======  ===========================================================

Items are stored as digests, not vocabulary rows, so a log survives a model change: a model
maps ``item_key`` to its row index when it rebuilds a state from the log. With 48-bit digests
two distinct items collide with probability ~n²/2^49 (about 2e-5 for a million items).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = [
    "EVENT_DTYPE",
    "IDENTITY_SIZE",
    "RECORD_SIZE",
    "LogFormatError",
    "action_key",
    "decode_log",
    "event_id_key",
    "identity_keys",
    "item_key",
    "make_records",
]

EVENT_DTYPE = np.dtype([("ts", "<f8"), ("item", "V6"), ("action", "u1"), ("event_id", "V5")])
RECORD_SIZE = 20
IDENTITY_SIZE = 16
_NO_EVENT_ID = bytes(5)


class LogFormatError(ValueError):
    """A log blob whose length is not a multiple of the 20-byte record size."""

    def __init__(self, length: int) -> None:
        super().__init__(f"event log of {length} bytes is not a multiple of {RECORD_SIZE}")
        self.length = length


@lru_cache(maxsize=1 << 16, typed=True)  # popular items recur in every /ingest body
def item_key(item_id: int | str) -> bytes:
    """6-byte digest of ``str(item_id)``: the ints 123 and the string "123" are one item."""
    return hashlib.blake2b(str(item_id).encode("utf-8"), digest_size=6).digest()


@lru_cache(maxsize=256)
def action_key(action: str | None) -> int:
    """Action code in 1..255, or 0 for no action (``None`` or ``""``)."""
    if not action:
        return 0
    return 1 + hashlib.blake2b(action.encode("utf-8"), digest_size=1).digest()[0] % 255


def event_id_key(event_id: str | None) -> bytes:
    """5-byte digest of an event id; all zero means "no event id" and is never a digest."""
    if event_id is None:
        return _NO_EVENT_ID
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=5).digest()
    if digest == _NO_EVENT_ID:  # keep zero reserved for "absent"
        digest = b"\x01" + digest[1:]
    return digest


def make_records(
    ts: Sequence[float] | npt.ArrayLike,
    items: Sequence[int | str],
    actions: Sequence[str | None],
    event_ids: Sequence[str | None],
) -> np.ndarray:
    """Build a structured array of ``EVENT_DTYPE``, shape (n,), from n parallel columns.

    Raises:
        ValueError: when the four columns do not have the same length.
    """
    ts_arr = np.asarray(ts, dtype="<f8").reshape(-1)
    n = ts_arr.shape[0]
    lengths = {n, len(items), len(actions), len(event_ids)}
    if len(lengths) != 1:
        raise ValueError(
            f"columns differ in length: ts={n}, items={len(items)}, "
            f"actions={len(actions)}, event_ids={len(event_ids)}"
        )
    records = np.empty(n, dtype=EVENT_DTYPE)
    if n == 0:
        return records
    records["ts"] = ts_arr
    records["item"] = np.frombuffer(b"".join(item_key(i) for i in items), dtype="V6")
    records["action"] = np.fromiter((action_key(a) for a in actions), dtype=np.uint8, count=n)
    records["event_id"] = np.frombuffer(b"".join(event_id_key(e) for e in event_ids), dtype="V5")
    return records


def decode_log(blob: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a log blob into a structured array of ``EVENT_DTYPE``, shape (len(blob) // 20,).

    For ``bytes`` input the result is a zero-copy, read-only view of ``blob``.

    Raises:
        LogFormatError: when ``len(blob)`` is not a multiple of 20.
    """
    length = memoryview(blob).nbytes
    if length % RECORD_SIZE:
        raise LogFormatError(length)
    return np.frombuffer(blob, dtype=EVENT_DTYPE)


def identity_keys(records: np.ndarray) -> bytes:
    """One 16-byte identity per record, concatenated (16·n bytes): what dedup compares.

    Tag 1 + the 5-byte event id when the record has one, else tag 2 + the first 15 bytes of
    the record (ts bit for bit, item digest, action). The tag keeps the two key spaces apart:
    a record with an event id never matches one without.
    """
    raw = np.ascontiguousarray(records, dtype=EVENT_DTYPE).view(np.uint8).reshape(-1, RECORD_SIZE)
    keys = np.zeros((raw.shape[0], IDENTITY_SIZE), dtype=np.uint8)  # (n, 16)
    has_id = raw[:, 15:20].any(axis=1)  # (n,)
    keys[:, 0] = np.where(has_id, 1, 2)
    keys[has_id, 1:6] = raw[has_id, 15:20]
    keys[~has_id, 1:16] = raw[~has_id, 0:15]
    return keys.tobytes()
