"""plan_compaction: size-tiered merges (an event is rewritten a few times, not once per
compaction) that keep every byte; stitch joins what the plan stores."""

from __future__ import annotations

from service.history.codec import encode_segment
from service.history.segments import SegmentRow, plan_compaction, stitch
from service.store.eventlog import make_records


def recs(first: int, last: int) -> bytes:
    seqs = range(first, last + 1)
    return make_records(
        [1.7e9 + 60.0 * s for s in seqs], list(seqs), [None] * len(seqs), [f"e{s}" for s in seqs]
    ).tobytes()


def row(first: int, last: int, *, plain: bool) -> SegmentRow:
    return SegmentRow(first, last, encode_segment(recs(first, last), compact=not plain))


def test_a_compact_segment_larger_than_the_newer_ones_is_left_alone() -> None:
    small = [
        row(1, 100, plain=False),
        row(101, 150, plain=False),
        row(151, 170, plain=False),
        row(171, 190, plain=True),
    ]
    plan = plan_compaction("u", small, 2_048)
    assert plan.remove == [170, 190]  # 20 + 20 merged; 50 and 100 wait for their tier
    assert [(r.first_seq, len(r.records) // 20) for r in plan.add] == [(151, 40)]


def test_every_plain_segment_is_merged() -> None:
    small = [row(1, 5, plain=True), row(6, 300, plain=False), row(301, 305, plain=True)]
    plan = plan_compaction("u", small, 2_048)
    assert plan.remove == [5, 300, 305]  # the older plain row joins the larger one's tier
    assert [(r.first_seq, len(r.records) // 20) for r in plan.add] == [(1, 300), (301, 5)]


def test_appends_of_a_few_events_are_rewritten_a_logarithmic_number_of_times() -> None:
    """A user appended 5 events at a time and compacted after each append: each event is
    re-encoded about log2(events) times (it was up to once per compaction: ~200 times here),
    and the history reads back whole."""
    segment_events, rows, rewritten, seq = 2_048, [], 0, 0
    for _ in range(400):
        rows.append(row(seq + 1, seq + 5, plain=True))
        seq += 5
        small = [r for r in rows if r.last_seq - r.first_seq + 1 < segment_events]
        plan = plan_compaction("u", small, segment_events)
        rewritten += sum(len(run.records) // 20 for run in plan.add)
        gone = set(plan.remove)
        added = [
            SegmentRow(
                r.first_seq, r.first_seq + len(r.records) // 20 - 1, encode_segment(r.records)
            )
            for r in plan.add
        ]
        rows = sorted([r for r in rows if r.last_seq not in gone] + added, key=lambda r: r.last_seq)
    assert rewritten <= seq * 12, rewritten / seq  # log2(2,000) ≈ 11
    assert len(rows) <= 12
    assert stitch("u", rows, 0).records == recs(1, seq)
