"""BackgroundCompactor: when users are compacted (count, idle time), in batches, failures."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import HistoryUnavailable
from service.history.compaction import BackgroundCompactor
from tests.service.support import until

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail

    async def __call__(self, *users: str) -> int:
        self.calls.append(users)
        if self.fail:
            raise HistoryUnavailable("down")
        return len(users)


async def test_a_user_is_compacted_once_its_small_appends_reach_after_events() -> None:
    compact = Recorder()
    compactor = BackgroundCompactor(compact, after=30, idle_s=60)
    try:
        compactor.note([("a", 10), ("b", 25)])
        compactor.note([("a", 19)])
        await asyncio.sleep(0.05)
        assert compact.calls == []
        compactor.note([("a", 1)])
        await until(lambda: bool(compact.calls))
        assert compact.calls == [("a",)]
    finally:
        await compactor.close()


async def test_an_idle_user_is_compacted_with_fewer_appends() -> None:
    compact = Recorder()
    compactor = BackgroundCompactor(compact, after=100, idle_s=0.2)
    try:
        compactor.note([("a", 1)])
        await asyncio.sleep(0.1)
        assert compact.calls == []  # not idle long enough yet
        await until(lambda: bool(compact.calls))
        assert compact.calls == [("a",)]
    finally:
        await compactor.close()


async def test_users_are_compacted_in_batches_each_once() -> None:
    compact = Recorder()
    compactor = BackgroundCompactor(compact, after=1, idle_s=60, batch=64)
    try:
        users = [f"u{k}" for k in range(150)]
        compactor.note([(u, 1) for u in users])
        compactor.note([(u, 1) for u in users[:10]])  # queued already: not twice
        await until(lambda: sum(len(c) for c in compact.calls) >= 150)
        assert max(len(c) for c in compact.calls) <= 64
        assert sorted(u for c in compact.calls for u in c) == sorted(users)
    finally:
        await compactor.close()


async def test_a_failed_compaction_is_logged_and_the_task_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    compact = Recorder(fail=True)
    compactor = BackgroundCompactor(compact, after=1, idle_s=60)
    try:
        compactor.note([("a", 1)])
        await until(lambda: len(compact.calls) == 1)
        compactor.note([("b", 1)])
        await until(lambda: len(compact.calls) == 2)
        await asyncio.wait_for(compactor.idle(), 1)  # failed users are not counted any more
        assert "compacting 1 users failed" in caplog.text
    finally:
        await compactor.close()


async def test_off_when_after_is_zero() -> None:
    compact = Recorder()
    compactor = BackgroundCompactor(compact, after=0, idle_s=0.01)
    compactor.note([("a", 5)] * 10)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(compactor.idle(), 1)
    assert compact.calls == []
    await compactor.close()


async def test_a_bug_in_a_compaction_is_logged_and_the_task_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[tuple[str, ...]] = []

    async def broken(*users: str) -> int:
        calls.append(users)
        raise RuntimeError("a bug")

    compactor = BackgroundCompactor(broken, after=1, idle_s=60)
    try:
        compactor.note([("a", 1)])
        await until(lambda: len(calls) == 1)
        compactor.note([("b", 1)])
        await asyncio.wait_for(compactor.idle(), 1)
        assert calls == [("a",), ("b",)] and "a bug" in caplog.text
    finally:
        await compactor.close()
