"""The ingest-stream interface: post a notice per user and ingest call; appliers lease
partitions, read new notices, take over the pending ones of a dead owner, and acknowledge.

Semantics shared by both implementations:

- ``post`` appends a notice to the user's partition (``keys.partition_of``).
- A partition is applied by the holder of its lease (``acquire`` takes a free or expired one,
  or renews one's own, for ``lease_s`` seconds). So a user, who lives in one partition, is
  written by one applier at a time; the state write is still fenced (``Store.commit_state``).
- ``read`` delivers notices no consumer has seen yet; they stay pending until ``ack``.
- ``claim`` hands every pending notice of the partition, the caller's own included, to the
  caller (after a take-over: the previous owner died, or lost its lease, before
  acknowledging; or after a failed apply, to retry).
- ``backlog`` counts the notices not yet acknowledged (delivered or not).
- ``heartbeat`` records that an applier is alive and returns how many are (for sharing the
  partitions out); ``leave`` forgets a stopping one.
- ``mark`` (the sweeper's net): /ingest marks its users dirty BEFORE storing, scored by the
  time it began, one member per user and ingest call (``dirty_member``: the user and the
  call's token); ``dirty`` lists a partition's members marked before a time, and ``clean``
  removes a member iff its mark did not move since it was listed. A serve killed between the
  store and the announce leaves its users marked, so the sweeper applies them. A notice
  carries its ingest call's token, and the applier that applied it removes that call's
  member with its acknowledgement (``ack``'s ``unmark``): an announced user costs the sweeper
  nothing, while another call's member of the same user (one that may still be storing)
  stays for that call's own notice or the sweeper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from service.store.keys import partition_of

__all__ = ["IngestStream", "Notice", "dirty_member", "dirty_members", "marked_user"]

# Between a user id and an ingest call's token in a dirty member: no user id has a space
# (service.user_ids).
_MARK_SEPARATOR = " "


def dirty_member(user_id: str, token: str) -> str:
    """The dirty set's member of one ingest call's mark of a user; an empty token gives the
    bare user id (what releases before per-call marks wrote, still read by the sweeper)."""
    return f"{user_id}{_MARK_SEPARATOR}{token}" if token else user_id


def dirty_members(user_ids: Sequence[str], token: str, partitions: int) -> dict[int, list[str]]:
    """The ingest call ``token``'s members of these users, by partition: what ``mark``
    writes, and what ``ack(unmark=...)`` removes for a call that announces nothing."""
    by_partition: dict[int, list[str]] = {}
    for user_id in user_ids:
        member = dirty_member(user_id, token)
        by_partition.setdefault(partition_of(user_id, partitions), []).append(member)
    return by_partition


def marked_user(member: str) -> str:
    """The user of a dirty member."""
    return member.split(_MARK_SEPARATOR, 1)[0]


class Notice(NamedTuple):
    """One stream entry: ``user_id`` has events up to ``seq``, acknowledged at ``posted_s``;
    ``token``: its ingest call's mark token ("" in entries posted without one)."""

    partition: int
    entry_id: str
    user_id: str
    seq: int
    posted_s: float  # unix seconds
    token: str = ""


@runtime_checkable
class IngestStream(Protocol):
    """Partitioned notices for the appliers; see the module docstring."""

    partitions: int

    async def post(self, user_id: str, seq: int, posted_s: float, token: str = "") -> None: ...

    async def post_batch(
        self, notices: Sequence[tuple[str, int]], posted_s: float, token: str = ""
    ) -> None:
        """``post`` of many (user, seq) notices in one round trip; ``token``: the ingest
        call's, as given to ``mark``, carried for ``ack`` to unmark."""
        ...

    async def acquire(self, partition: int, consumer: str, lease_s: float) -> bool: ...

    async def release(self, partition: int, consumer: str) -> None: ...

    async def read(
        self, partition: int, consumer: str, count: int, block_s: float
    ) -> list[Notice]: ...

    async def claim(self, partition: int, consumer: str, count: int) -> list[Notice]: ...

    async def ack(
        self,
        entries: Mapping[int, Sequence[str]],
        unmark: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        """Acknowledge and delete the entries ``{partition: entry ids}`` of one or more
        partitions, and remove the dirty members ``{partition: members}`` of the calls they
        announced, in one round trip (one per node of a cluster, sent together). Not atomic:
        when it raises, some of it may be done already."""
        ...

    async def backlog(self, partition: int) -> int: ...

    async def heartbeat(self, consumer: str, ttl_s: float) -> int: ...

    async def leave(self, consumer: str) -> None:
        """Forget ``consumer``'s heartbeat (a graceful stop), so the appliers left count it out
        of their shares at once instead of after its heartbeat's ttl."""
        ...

    async def mark(self, user_ids: Sequence[str], now_s: float, token: str = "") -> None:
        """Mark the users dirty at ``now_s`` (unix seconds), one member each for the ingest
        call ``token`` (``dirty_member``), in one round trip."""
        ...

    async def dirty(self, partition: int, before_s: float, count: int) -> list[tuple[str, float]]:
        """Up to ``count`` (member, mark) of the partition marked at or before ``before_s``."""
        ...

    async def clean(self, partition: int, marks: Sequence[tuple[str, float]]) -> None:
        """Remove each (member, mark) whose mark is still the one given."""
        ...

    async def dirty_count(self, partition: int) -> int:
        """Dirty members of the partition now."""
        ...

    async def close(self) -> None: ...
