"""bench/e2e/history.py: the /ingest-shaped appends, and one small run on a private postgres."""

from __future__ import annotations

import asyncio

from bench.e2e import history
from service.store.eventlog import RECORD_SIZE, decode_log


def test_batches_send_every_event_once_in_order_spread_over_users() -> None:
    histories = [history.user_events(u, n) for u, n in enumerate([45, 3, 20, 0])]
    batches = history.ingest_batches(histories, body=40, spread=2)  # 20 events per user
    assert all(len(batch) <= 2 for batch in batches)
    sent: dict[str, bytes] = {}
    for batch in batches:
        for chunk in batch:
            assert chunk.first_seq == len(sent.get(chunk.user_id, b"")) // RECORD_SIZE + 1
            assert len(chunk.records) <= 20 * RECORD_SIZE
            sent[chunk.user_id] = sent.get(chunk.user_id, b"") + chunk.records
    assert sent == {f"user-{u}": h for u, h in enumerate(histories) if h}


def test_user_events_are_deterministic_with_ms_timestamps() -> None:
    events = decode_log(history.user_events(7, 100))
    assert history.user_events(7, 100) == events.tobytes()
    assert (events["ts"][1:] >= events["ts"][:-1]).all()
    assert len(set(events["event_id"].tolist())) == 100


def test_a_small_run_prints_both_tables(postgres_url: str) -> None:
    row = asyncio.run(history.bytes_per_event(postgres_url, 100, 1_000, 1_000, 50))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["100", "10"]
    appended, background, compacted = (float(c) for c in cells[2:])
    assert compacted < appended and background < appended
    rows = asyncio.run(history.append_rates(postgres_url, 2_000, 1_000, 50))
    assert len(rows) == 2 and all(
        float(c.replace(",", "")) > 0 for c in rows[0].strip("|").split("|")[1:]
    )
