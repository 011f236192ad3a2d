"""UserLocks: one holder per key at a time, keys independent, nothing left behind."""

from __future__ import annotations

import asyncio

import pytest

from service.core.userlocks import UserLocks

pytestmark = pytest.mark.anyio


async def test_one_holder_per_key_and_keys_independent() -> None:
    locks = UserLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}

    async def work(key: str) -> None:
        async with locks.hold(key):
            inside[key] += 1
            peak[key] = max(peak[key], inside[key])
            await asyncio.sleep(0.001)
            inside[key] -= 1

    await asyncio.gather(*(work(k) for k in "abababab"))
    assert peak == {"a": 1, "b": 1}
    assert len(locks) == 0  # no lock outlives its holders


async def test_lock_released_when_the_holder_fails() -> None:
    locks = UserLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("u"):
            raise RuntimeError("boom")
    assert len(locks) == 0
    async with asyncio.timeout(1):
        async with locks.hold("u"):
            assert len(locks) == 1
