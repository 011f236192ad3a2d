"""The durable history protocol: a user's whole event history, addressed by sequence number.

Every event a user ever had carries an absolute sequence number ``seq`` (1, 2, …; see
``service.store.base``). The history stores the 20-byte ``EVENT_DTYPE`` records of
``service.store.eventlog`` under those numbers, with no cap: Redis keeps what is hot (state,
dedup, a short tail), the history keeps everything, on disk, for rebuilds, the exact-mode
rank and backfills.

Invariants every implementation keeps:

- **Contiguous.** A user's stored events are exactly ``1..last_seq(user)``. ``append`` refuses
  (with :class:`HistoryGap`, storing nothing of the call) a chunk that would leave a hole, so
  ``read`` never has to guess what a missing seq was.
- **Idempotent.** A seq already stored is skipped: re-sending a chunk, or a chunk that
  partly overlaps what is stored (a crash between the write and its acknowledgement), stores
  only its new tail. The first write of a seq wins.
- **Batched.** One ``append`` call is one round trip for any number of users.
- **Failures are 503s.** An unreachable or timed-out tier raises :class:`HistoryUnavailable`
  (``service.errors``), which the API answers with 503 and ``Retry-After``; retrying the same
  ``append`` is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from service.errors import HistoryUnavailable, StoreError
from service.store.eventlog import RECORD_SIZE, LogFormatError
from service.store.keys import validate_user_id

__all__ = [
    "HistoryChunk",
    "HistoryCorrupt",
    "HistoryGap",
    "HistoryObserver",
    "HistorySlice",
    "HistoryStore",
    "HistoryUnavailable",
    "UserRun",
    "normalize_chunks",
]


class HistoryChunk(NamedTuple):
    """One user's events ``first_seq, first_seq + 1, …``: ``records`` is 20·n bytes."""

    user_id: str
    first_seq: int
    records: bytes

    @property
    def last_seq(self) -> int:
        """Seq of the chunk's last record (``first_seq - 1`` for an empty chunk)."""
        return self.first_seq - 1 + len(self.records) // RECORD_SIZE


class HistorySlice(NamedTuple):
    """A contiguous run of a user's history, as ``read`` returns it.

    Attributes:
        records: concatenated 20-byte records, oldest first.
        last_seq: seq of the last record (``first_seq - 1`` when ``records`` is empty).
        first_seq: seq of the first record (``after_seq + 1`` of the read).

    Always ``len(records) == 20 * (last_seq - first_seq + 1)``.
    """

    records: bytes
    last_seq: int
    first_seq: int

    @property
    def events(self) -> int:
        """Number of records."""
        return len(self.records) // RECORD_SIZE


class HistoryGap(ValueError):
    """An append whose chunk would leave seqs missing: it starts after ``stored + 1``.

    A caller bug (or a lost backfill), not an outage: retrying the same call cannot help.
    """

    def __init__(self, user_id: str, first_seq: int, stored: int) -> None:
        super().__init__(
            f"history of {user_id!r} holds seq 1..{stored}: a chunk starting at seq "
            f"{first_seq} would leave a gap"
        )
        self.user_id = user_id
        self.first_seq = first_seq
        self.stored = stored


class HistoryCorrupt(StoreError):
    """Stored history that does not decode: answered 503 (the request was fine), logged."""

    reason = "history_corrupt"

    def __init__(self, user_id: str, what: str) -> None:
        super().__init__(f"history of {user_id!r} is corrupt: {what}")
        self.user_id = user_id


class HistoryObserver(Protocol):
    """Receives what a history tier does (``service.metrics.HistoryMetrics`` records it)."""

    def op_seconds(self, op: str, seconds: float) -> None:
        """One operation (``append``, ``read``, ``last_seq``, ``delete``, ``compact``, …) took
        ``seconds``, failed or not."""

    def error(self, kind: str) -> None:
        """An operation failed: ``unavailable`` (503), ``corrupt`` (a segment that does not
        decode) or ``gap`` (an append that would leave seqs missing)."""

    def compacted(self, segments: int, events: int) -> None:
        """A compaction removed ``segments`` segments net, re-encoding ``events`` events."""


@runtime_checkable
class HistoryStore(Protocol):
    """A user's whole event history; see the module docstring for the invariants."""

    async def append(self, chunks: Sequence[HistoryChunk]) -> None:
        """Persist each user's records as events ``first_seq, first_seq + 1, …``.

        Idempotent: a seq already stored for the user is skipped. One round trip for the
        whole sequence; several chunks of one user must be contiguous or overlapping.

        Raises:
            HistoryUnavailable: the tier is down or timed out (nothing or everything stored).
            HistoryGap: a chunk would leave a hole (nothing of the call is stored).
            InvalidUserId, LogFormatError, ValueError: malformed chunks (nothing stored).
        """
        ...

    async def read(self, user_id: str, *, after_seq: int = 0) -> HistorySlice:
        """The user's records with ``seq > after_seq``, oldest first."""
        ...

    async def last_seq(self, user_id: str) -> int:
        """Seq of the user's last stored event; 0 when nothing is stored."""
        ...

    async def users(self, *, after: str = "", limit: int = 1_000) -> list[str]:
        """Up to ``limit`` users with a stored history whose ids sort after ``after``, in
        order (page through every user: ``after`` = the last one of the previous page)."""
        ...

    async def delete(self, user_id: str) -> None:
        """Forget the user's history (the next append starts again at seq 1)."""
        ...

    async def ping(self) -> None:
        """Raise ``HistoryUnavailable`` unless the tier answers."""
        ...

    async def close(self) -> None: ...


class UserRun(HistoryChunk):
    """One user's chunks of an ``append`` call merged into one contiguous run."""

    __slots__ = ()


def normalize_chunks(chunks: Sequence[HistoryChunk]) -> list[UserRun]:
    """Validate the chunks and merge each user's into one run, users in first-seen order.

    Overlapping chunks of one call should carry the same records (a re-send); where they
    differ, the chunk with the lower ``first_seq`` wins. Empty chunks are dropped.

    Raises:
        InvalidUserId, LogFormatError, ValueError (``first_seq < 1``), HistoryGap (two chunks
        of one user with a hole between them).
    """
    by_user: dict[str, list[HistoryChunk]] = {}
    for chunk in chunks:
        validate_user_id(chunk.user_id)
        if len(chunk.records) % RECORD_SIZE:
            raise LogFormatError(len(chunk.records))
        if chunk.first_seq < 1:
            raise ValueError(f"first_seq must be ≥ 1, got {chunk.first_seq}")
        if chunk.records:
            by_user.setdefault(chunk.user_id, []).append(chunk)
    runs = []
    for user_id, parts in by_user.items():
        parts.sort(key=lambda c: c.first_seq)
        first, data = parts[0].first_seq, bytearray(parts[0].records)
        for part in parts[1:]:
            last = first - 1 + len(data) // RECORD_SIZE
            if part.first_seq > last + 1:
                raise HistoryGap(user_id, part.first_seq, last)
            skip = (last + 1 - part.first_seq) * RECORD_SIZE
            data += part.records[skip:]
        runs.append(UserRun(user_id, first, bytes(data)))
    return runs
