"""A user's segment rows → records (``stitch``) and small segments → fewer (``plan_compaction``).

Pure functions over rows ``(first_seq, last_seq, data)`` sorted by ``last_seq``, as the table
returns them. Segments of a user may overlap after a partial re-send; the earlier one (lower
``last_seq``) holds the first write of each seq, so both functions keep its records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from service.history.base import HistoryCorrupt, HistorySlice, UserRun
from service.history.codec import RAW, SegmentFormatError, decode_segment
from service.store.eventlog import RECORD_SIZE

__all__ = ["CompactionPlan", "SegmentRow", "plan_compaction", "stitch"]


class SegmentRow(NamedTuple):
    """One stored segment: the events ``first_seq..last_seq``, ``data`` a codec blob."""

    first_seq: int
    last_seq: int
    data: bytes


class CompactionPlan(NamedTuple):
    """Rows to delete (by ``last_seq``) and the runs to store in their place."""

    remove: list[int]
    add: list[UserRun]


def stitch(user_id: str, rows: Sequence[SegmentRow], after_seq: int) -> HistorySlice:
    """Join segments (sorted by last seq) into the records after ``after_seq``.

    Raises:
        HistoryCorrupt: a segment does not decode, or seqs are missing between two.
    """
    have, parts = after_seq, []
    for first_seq, last_seq, data in rows:
        if last_seq <= have:
            continue
        if first_seq > have + 1:
            raise HistoryCorrupt(user_id, f"seqs {have + 1}..{first_seq - 1} are missing")
        try:
            records = decode_segment(bytes(data))
        except SegmentFormatError as exc:
            raise HistoryCorrupt(user_id, f"segment {first_seq}..{last_seq}: {exc}") from exc
        if len(records) != (last_seq - first_seq + 1) * RECORD_SIZE:
            raise HistoryCorrupt(user_id, f"segment {first_seq}..{last_seq} has a wrong length")
        parts.append(records[(have + 1 - first_seq) * RECORD_SIZE :])
        have = last_seq
    return HistorySlice(b"".join(parts), have, after_seq + 1)


def plan_compaction(
    user_id: str, small: Sequence[SegmentRow], segment_events: int
) -> CompactionPlan:
    """Merge runs of adjacent small segments into compact segments of ``segment_events``
    events (the last one of a run possibly smaller), size-tiered so that an event is
    rewritten about log2(``segment_events`` / first size) times, not once per compaction.

    Within each run of adjacent small segments, from the newest back: every plain segment
    (``codec.RAW``) is merged, and a compact one is merged only when it holds no more events
    than the newer segments merged with it; a larger one starts a new tier. A tier of one
    compact segment is left as it is.

    Args:
        small: the user's segments of fewer than ``segment_events`` events, by last seq;
            two of them are adjacent when the second starts at most one seq after the first
            ends (a full segment between them leaves a larger hole).

    Raises:
        HistoryCorrupt: a segment does not decode.
    """
    groups: list[list[SegmentRow]] = []
    for row in small:
        if groups and row.first_seq <= groups[-1][-1].last_seq + 1:
            groups[-1].append(row)
        else:
            groups.append([row])
    plan = CompactionPlan([], [])
    step = segment_events * RECORD_SIZE
    for tier in (tier for group in groups for tier in _tiers(group)):
        if len(tier) < 2 and tier[0].data[:1] != bytes([RAW]):
            continue
        joined = stitch(user_id, tier, tier[0].first_seq - 1)
        plan.remove.extend(row.last_seq for row in tier)
        for start in range(0, len(joined.records), step):
            first = joined.first_seq + start // RECORD_SIZE
            plan.add.append(UserRun(user_id, first, joined.records[start : start + step]))
    return plan


def _tiers(group: Sequence[SegmentRow]) -> list[list[SegmentRow]]:
    """``group`` (adjacent small segments, by last seq) cut into the runs to merge, oldest
    first (see ``plan_compaction``)."""
    tiers: list[list[SegmentRow]] = []
    tier: list[SegmentRow] = []
    events = 0
    for row in reversed(group):
        size = row.last_seq - row.first_seq + 1
        if tier and row.data[:1] != bytes([RAW]) and size > events:
            tiers.append(tier[::-1])
            tier, events = [], 0
        tier.append(row)
        events += size
    tiers.append(tier[::-1])
    return tiers[::-1]
