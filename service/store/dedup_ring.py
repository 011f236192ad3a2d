"""The compact exact dedup structure: a ring of the user's last W identity digests
(docs/DESIGN.md §4).

Guarantee (the README's sentence): *an event re-sent while it is among the user's last W
accepted events is counted as a duplicate and never applied twice; an older event (its ts at
or before the newest ts that has left the ring) is refused and counted as ``refused``, never
applied twice.*

Layout of the ring, one Redis string per user (``solar:{<user>}:dedup``), little-endian:

==================  =========  ====================================================
bytes               what       meaning
==================  =========  ====================================================
``[0, 8W)``         digests    slot ``(seq - 1) mod W`` holds the 8-byte digest of
                               event ``seq``; all zero: empty (never a digest)
``[8W, 8W + 8B)``   block max  per block of ``BLOCK`` slots, the largest ts (float64)
                               of the events written there in the ring's current pass
``[8W + 8B, +8)``   watermark  float64 ≥ the ts of every event that left the ring
==================  =========  ====================================================

with ``B = W / BLOCK`` blocks. At W = 4,000 the string is 32,648 B, inside jemalloc's
32 KiB size class (``MEMORY USAGE`` ≈ 32.8 KB).

Watermark: the ts of evicted events is not kept per slot (that would double the ring), so
when an event overwrites the first slot of a block, the block's old maximum joins the
watermark and the block restarts from the new event's ts. The watermark is therefore an
upper bound of the evicted ts (conservative: it refuses a little more than needed, never
less). An event whose identity is not in the ring and whose ts is ≤ the watermark might be
a re-send of an evicted event, so it is refused; time-ordered streams never see that.

The Lua scripts of ``service.store.redis_store`` implement the same steps on the string;
:class:`DedupRing` is their Python twin (``MemoryStore`` uses it, and a lost ring is rebuilt
from the durable tier with :meth:`DedupRing.replay`).
"""

from __future__ import annotations

import math
import struct

import numpy as np

from service.store.eventlog import EVENT_DTYPE, IDENTITY_SIZE, identity_keys

__all__ = [
    "BLOCK",
    "DIGEST_SIZE",
    "DedupRing",
    "IngestCounts",
    "check_window",
    "digests",
    "ring_size",
]

DIGEST_SIZE = 8
BLOCK = 50  # slots per watermark block
_EMPTY = bytes(DIGEST_SIZE)
_U64 = np.uint64


def check_window(window: int) -> int:
    """``window`` if it is a positive multiple of ``BLOCK``; ValueError otherwise."""
    if window < BLOCK or window % BLOCK:
        raise ValueError(f"dedup window must be a positive multiple of {BLOCK}, got {window}")
    return window


def ring_size(window: int) -> int:
    """Bytes of a ring of ``window`` slots: digests, block maxima, watermark."""
    return window * DIGEST_SIZE + (window // BLOCK) * 8 + 8


def digests(identities: bytes) -> bytes:
    """One 8-byte digest per 16-byte identity (``eventlog.identity_keys``), concatenated.

    A 64-bit mix (splitmix64's finaliser over both halves): two distinct identities among a
    user's last 4,000 collide with probability ~4,000² / 2^65, about 4e-13. Never all zero.
    """
    n = len(identities) // IDENTITY_SIZE
    halves = np.frombuffer(identities, dtype="<u8").reshape(n, 2)  # (n, 2)
    with np.errstate(over="ignore"):
        h = halves[:, 0] * _U64(0x9E3779B97F4A7C15) ^ halves[:, 1]
        h = (h ^ (h >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> _U64(27))) * _U64(0x94D049BB133111EB)
        h = h ^ (h >> _U64(31))
    h[h == 0] = 1  # zero marks an empty slot
    return h.astype("<u8").tobytes()


class IngestCounts:
    """Counters of one ring update: fresh, duplicate and refused events."""

    __slots__ = ("duplicates", "fresh", "refused")

    def __init__(self) -> None:
        self.fresh: list[int] = []  # indices of the accepted events, in order
        self.duplicates = 0
        self.refused = 0


class DedupRing:
    """The Python twin of the Redis ring (see the module docstring)."""

    def __init__(self, window: int) -> None:
        self.window = check_window(window)
        self.slots = bytearray(window * DIGEST_SIZE)
        self.block_max = [0.0] * (window // BLOCK)
        self.watermark = -math.inf
        self._index: dict[bytes, int] = {}  # digest → slot (for O(1) lookups in Python)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._index

    def add(self, seq: int, digest: bytes, ts: float) -> bytes:
        """Write event ``seq`` (its digest and ts) into its slot, evicting event seq - W;
        returns the evicted digest (all zero: the slot was empty)."""
        slot = (seq - 1) % self.window
        block = slot // BLOCK
        if seq > self.window and slot % BLOCK == 0:
            self.watermark = max(self.watermark, self.block_max[block])
            self.block_max[block] = ts
        else:
            self.block_max[block] = max(self.block_max[block], ts)
        old = bytes(self.slots[slot * DIGEST_SIZE : (slot + 1) * DIGEST_SIZE])
        if old != _EMPTY and self._index.get(old) == slot:
            del self._index[old]
        self.slots[slot * DIGEST_SIZE : (slot + 1) * DIGEST_SIZE] = digest
        self._index[digest] = slot
        return old

    def admit(self, seq: int, digest_blob: bytes, ts: np.ndarray) -> IngestCounts:
        """Dedup n events (digests (8n bytes), ts (n,)) whose fresh ones get the sequence
        numbers seq + 1, seq + 2, …; the ring is updated. Same steps as the Lua script."""
        counts = IngestCounts()
        # The Lua script searches the ring as it was before the call plus a set of this call's
        # fresh digests: here the current ring, this call's fresh and this call's evicted.
        seen: set[bytes] = set()
        for i in range(ts.shape[0]):
            digest = digest_blob[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]
            if digest in self or digest in seen:
                counts.duplicates += 1
            elif float(ts[i]) <= self.watermark:
                counts.refused += 1
            else:
                seen.add(digest)
                counts.fresh.append(i)
                seen.add(self.add(seq + len(counts.fresh), digest, float(ts[i])))
        return counts

    def to_bytes(self) -> bytes:
        """The Redis string of this ring (module docstring layout)."""
        tail = struct.pack(f"<{len(self.block_max)}dd", *self.block_max, self.watermark)
        return bytes(self.slots) + tail

    @classmethod
    def from_bytes(cls, blob: bytes) -> DedupRing:
        """The ring a Redis string encodes (``to_bytes``'s inverse); ValueError if malformed."""
        window = (len(blob) - 8) * BLOCK // (BLOCK * DIGEST_SIZE + 8)
        if window < BLOCK or ring_size(window) != len(blob) or window % BLOCK:
            raise ValueError(f"a dedup ring of {len(blob)} bytes is malformed")
        ring = cls(window)
        ring.slots[:] = blob[: window * DIGEST_SIZE]
        *maxima, ring.watermark = struct.unpack_from(
            f"<{window // BLOCK + 1}d", blob, len(ring.slots)
        )
        ring.block_max = list(maxima)
        for slot in range(window):
            digest = bytes(ring.slots[slot * DIGEST_SIZE : (slot + 1) * DIGEST_SIZE])
            if digest != _EMPTY:
                ring._index[digest] = slot
        return ring

    @classmethod
    def replay(cls, window: int, records: np.ndarray, last_seq: int) -> DedupRing:
        """The ring a user has after the events ``records`` (``EVENT_DTYPE``, oldest first,
        the last one being event ``last_seq``), rebuilt from the durable tier.

        Only the last W + BLOCK events are replayed; the older ones (already evicted before
        the replayed stretch) start the watermark.
        """
        ring = cls(window)
        records = np.asarray(records, dtype=EVENT_DTYPE)
        n = records.shape[0]
        keep = min(n, window + BLOCK)
        if n > keep:
            ring.watermark = float(np.max(records["ts"][: n - keep]))
        recent = records[n - keep :]
        blob = digests(identity_keys(recent))
        first = last_seq - keep + 1
        for i in range(keep):
            ring.add(
                first + i, blob[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE], float(recent["ts"][i])
            )
        return ring
