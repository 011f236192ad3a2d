"""Candidate ids read straight from a /rank body's JSON bytes and mapped to rows in compiled code.

The ordinary path (``service.core.items``) needs a Python object per candidate: msgspec
decodes 2,048 ids into strings (~0.2 ms under load), then each probes the vocabulary's dict
(0.6-0.9 ms under load: every probe reads its key object, a cache miss once a pass has
evicted it), all of it while holding the GIL that the batch thread needs between its torch
calls. Here msgspec hands the candidates over as raw bytes (``msgspec.Raw``);
:func:`scan_candidates` finds each element's span in one nogil kernel, and
:meth:`ByteIndex.rows` maps the spans through an open-addressing hash table of the
vocabulary's ids as bytes, in another. Only the ids a response names (the top k and the
unknown ones) ever become Python values (:class:`RawCandidates` decodes them on access).

Same ids, same rows as ``service.core.items.candidate_rows``: an integer and its canonical
decimal string are one id, and a JSON integer's text is its canonical decimal (so both are
looked up by the same bytes). The kernel takes only what it can map exactly: integers of at
most 18 digits (not -0) and strings of 1-256 printable ASCII characters without escapes. Any
other element (a float, an escape, a non-ASCII or over-long string, null, ...) or an empty
array makes :func:`scan_candidates` return None, and the caller decodes the body the
ordinary way, with its errors and its rules for whole floats.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import numba
import numpy as np
from numpy.typing import NDArray

from model.ranker import OOV_ITEM
from service.core.items import MAX_ITEM_ID_LENGTH, CandidateRows, ItemId

__all__ = ["MAX_INT_DIGITS", "ByteIndex", "RawCandidates", "scan_candidates", "warm_up"]

MAX_INT_DIGITS = 18  # longer integers (past int64 at 19+) take the ordinary path
_INT, _STR = 0, 1  # element kinds

Bytes = NDArray[np.uint8]
Int64s = NDArray[np.int64]


@numba.njit(cache=True, nogil=True)
def _skip_space(raw: Bytes, i: int) -> int:
    n = raw.shape[0]
    while i < n and (raw[i] == 32 or raw[i] == 9 or raw[i] == 10 or raw[i] == 13):
        i += 1
    return i


@numba.njit(cache=True, nogil=True)
def _string_end(raw: Bytes, i: int) -> int:
    """Index of the closing quote of the string opening at raw[i], or -1 when it is empty,
    longer than 256 characters, or holds an escape or anything but printable ASCII."""
    j = i + 1
    while j < raw.shape[0] and raw[j] != 34:
        b = raw[j]
        if b < 32 or b > 126 or b == 92:
            return -1
        j += 1
    # ASCII only: the length in bytes is the length in characters.
    if j >= raw.shape[0] or j == i + 1 or j - i - 1 > MAX_ITEM_ID_LENGTH:
        return -1
    return j


@numba.njit(cache=True, nogil=True)
def _integer_end(raw: Bytes, i: int) -> int:
    """End of the integer -?(0|[1-9][0-9]*) starting at raw[i], or -1 when it is not one,
    has more than MAX_INT_DIGITS digits, is -0 (the int 0, not its text) or goes on as a
    fraction or an exponent."""
    n = raw.shape[0]
    first = i + 1 if raw[i] == 45 else i
    j = first
    while j < n and 48 <= raw[j] <= 57:
        j += 1
    digits = j - first
    if digits == 0 or digits > MAX_INT_DIGITS or (raw[first] == 48 and digits > 1):
        return -1
    if first > i and digits == 1 and raw[first] == 48:
        return -1
    if j < n and (raw[j] == 46 or raw[j] == 101 or raw[j] == 69):  # . e E
        return -1
    return j


@numba.njit(cache=True, nogil=True)
def _count(raw: Bytes) -> int:
    """1 + the commas of ``raw`` outside its strings: the elements of a JSON array without
    escapes (an escaped quote throws the count off, but :func:`_scan` declines it first)."""
    commas, inside = 0, False
    for b in raw:
        if b == 34:
            inside = not inside
        elif b == 44 and not inside:
            commas += 1
    return commas + 1


@numba.njit(cache=True, nogil=True)
def _scan(raw: Bytes, starts: Int64s, ends: Int64s, kinds: NDArray[np.int8]) -> int:
    """Spans of the elements of the JSON array ``raw``: element e is raw[starts[e]:ends[e]]
    (a string's span excludes its quotes), of kind ``kinds[e]``. Returns the element count,
    or -1 when an element is not one this path maps (module docstring) or the array is empty
    or malformed, or when it holds more elements than ``starts`` has room for (size the
    arrays with :func:`_count`)."""
    n = raw.shape[0]
    i = _skip_space(raw, 0)
    if i >= n or raw[i] != 91:  # [
        return -1
    count = 0
    while True:
        i = _skip_space(raw, i + 1)  # past [ or ,
        if i >= n or count >= starts.shape[0]:
            return -1
        if raw[i] == 34:  # "
            end = _string_end(raw, i)
            starts[count], ends[count], kinds[count] = i + 1, end, _STR
        elif raw[i] == 45 or 48 <= raw[i] <= 57:  # - or a digit
            end = _integer_end(raw, i)
            starts[count], ends[count], kinds[count] = i, end, _INT
        else:
            return -1
        if end < 0:
            return -1
        count += 1
        i = _skip_space(raw, end + 1 if raw[i] == 34 else end)
        if i >= n or (raw[i] == 93 and _skip_space(raw, i + 1) != n):
            return -1
        if raw[i] == 93:  # ] and nothing after it
            return count
        if raw[i] != 44:  # ,
            return -1


@numba.njit(cache=True, nogil=True)
def _hash(raw: Bytes, start: int, end: int) -> np.uint64:
    """FNV-1a, 64 bits, of raw[start:end]."""
    h = np.uint64(14695981039346656037)
    for p in range(start, end):
        h = (h ^ np.uint64(raw[p])) * np.uint64(1099511628211)
    return h


@numba.njit(cache=True, nogil=True)
def _fill(keys: Bytes, offsets: Int64s, slots: Int64s) -> None:
    """Insert every key i (keys[offsets[i]:offsets[i + 1]]) into ``slots`` (linear probing;
    -1 marks an empty slot; the keys are distinct)."""
    mask = slots.shape[0] - 1
    for key in range(offsets.shape[0] - 1):
        slot = np.int64(_hash(keys, offsets[key], offsets[key + 1]) & np.uint64(mask))
        while slots[slot] >= 0:
            slot = (slot + 1) & mask
        slots[slot] = key


@numba.njit(cache=True, nogil=True)
def _lookup(
    raw: Bytes,
    starts: Int64s,
    ends: Int64s,
    keys: Bytes,
    offsets: Int64s,
    slots: Int64s,
    out: Int64s,
) -> None:
    """out[e] = key index + 1 (the model row) of span e, or OOV_ITEM (0) when no key equals it."""
    mask = slots.shape[0] - 1
    for e in range(out.shape[0]):
        start, end = starts[e], ends[e]
        slot = np.int64(_hash(raw, start, end) & np.uint64(mask))
        row = 0
        while slots[slot] >= 0:
            key = slots[slot]
            a, b = offsets[key], offsets[key + 1]
            if b - a == end - start:
                same = True
                for q in range(b - a):
                    if keys[a + q] != raw[start + q]:
                        same = False
                        break
                if same:
                    row = key + 1
                    break
            slot = (slot + 1) & mask
        out[e] = row


class ByteIndex:
    """The vocabulary's item ids as UTF-8 bytes → model rows, in an open-addressing hash
    table the kernels probe: item i (row i + 1) is keys[offsets[i]:offsets[i + 1]].

    Args:
        items: the vocabulary's ids in row order (``Vocabulary.items``: distinct strings).
    """

    def __init__(self, items: Sequence[str]) -> None:
        encoded = [item.encode("utf-8", "surrogatepass") for item in items]
        self.offsets: Int64s = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])
        self.keys: Bytes = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)
        size = 1 << max(1, (2 * len(encoded) - 1).bit_length())  # load factor ≤ 1/2
        self.slots: Int64s = np.full(size, -1, dtype=np.int64)
        _fill(self.keys, self.offsets, self.slots)

    def rows(self, candidates: RawCandidates) -> CandidateRows:
        """The candidates' rows (``OOV_ITEM`` for ids outside the vocabulary), their ids (a
        lazy view, decoded on access) and the unknown ones."""
        rows = np.empty(len(candidates), dtype=np.int64)
        _lookup(
            candidates.raw,
            candidates.starts,
            candidates.ends,
            self.keys,
            self.offsets,
            self.slots,
            rows,
        )
        unknown = candidates.take(np.flatnonzero(rows == OOV_ITEM).tolist())
        return CandidateRows(candidates, rows, unknown)


class RawCandidates(Sequence[ItemId]):
    """The candidates of a JSON body as spans of its bytes; element i decodes on access to
    the id as sent (an int or a str).

    Build with :func:`scan_candidates`. ``text`` is the array's JSON text and ``raw`` the same
    bytes as a uint8 array (a view, not a copy); ``starts``, ``ends`` (M,) int64 the spans;
    ``kinds`` (M,) int8 (0 int, 1 str). What it holds is the text plus 17 bytes an element.
    """

    __slots__ = ("ends", "kinds", "starts", "text")

    def __init__(self, text: bytes, starts: Int64s, ends: Int64s, kinds: NDArray[np.int8]) -> None:
        self.text, self.starts, self.ends, self.kinds = text, starts, ends, kinds

    @property
    def raw(self) -> Bytes:
        """The text as a uint8 array (a view, not a copy), what the kernels read."""
        return np.frombuffer(self.text, dtype=np.uint8)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @overload
    def __getitem__(self, index: int) -> ItemId: ...

    @overload
    def __getitem__(self, index: slice) -> list[ItemId]: ...

    def __getitem__(self, index: int | slice) -> ItemId | list[ItemId]:
        if isinstance(index, slice):
            return self.take(range(*index.indices(len(self))))
        return self.take([index])[0]

    def __iter__(self) -> Iterator[ItemId]:
        return iter(self.take(range(len(self))))

    def take(self, positions: Sequence[int]) -> list[ItemId]:
        """The ids at ``positions``, decoded (one gather of their spans, then a slice each)."""
        at = np.asarray(positions, dtype=np.int64)
        spans = zip(
            self.starts[at].tolist(),
            self.ends[at].tolist(),
            self.kinds[at].tolist(),
            strict=True,
        )
        text = self.text
        return [
            int(text[a:b]) if kind == _INT else text[a:b].decode("ascii") for a, b, kind in spans
        ]


def scan_candidates(raw: bytes | memoryview) -> RawCandidates | None:
    """The elements of the JSON array ``raw`` as :class:`RawCandidates`, or None when any
    is not an id this path maps exactly (see the module docstring; the caller then decodes
    the body the ordinary way). The spans' arrays are sized by the commas outside strings, not
    by the body's length: they are held for the whole request, and a body padded with spaces
    would otherwise inflate them."""
    text = bytes(raw)  # the array's text alone, not the body it was sliced from
    count, starts, ends, kinds = _spans(np.frombuffer(text, dtype=np.uint8))
    return None if count < 0 else RawCandidates(text, starts, ends, kinds)


@numba.njit(cache=True, nogil=True)
def _spans(raw: Bytes) -> tuple[int, Int64s, Int64s, NDArray[np.int8]]:
    """(count, starts, ends, kinds) of :func:`_scan`, the arrays allocated here at
    :func:`_count` (one call from Python: one GIL hand-off); count -1: declined."""
    room = _count(raw)
    starts = np.empty(room, dtype=np.int64)
    ends = np.empty(room, dtype=np.int64)
    kinds = np.empty(room, dtype=np.int8)
    count = _scan(raw, starts, ends, kinds)
    size = max(count, 0)
    return count, starts[:size], ends[:size], kinds[:size]


def warm_up() -> None:
    """Compile the kernels now (or load them from numba's cache) rather than on a first
    request."""
    found = scan_candidates(b'[1, "a"]')
    assert found is not None
    ByteIndex(["1", "b"]).rows(found)
