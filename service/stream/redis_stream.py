"""The ingest stream on Redis Streams: one stream per partition, one consumer group.

Partition k is the stream ``solar:ingest:{p<k>}`` with its lease ``…:lease`` in the same slot,
so on Redis Cluster the partitions spread over the masters. Entries are deleted once
acknowledged (XACK + XDEL), so XLEN is the backlog; no MAXLEN trimming ever drops a notice
that was not applied.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis import exceptions as redis_exc
from redis.asyncio.cluster import RedisCluster

from service.store.keys import APPLIERS_KEY, dirty_key, lease_key, partition_of, stream_key
from service.store.redis_client import RedisClient, as_text, redis_errors
from service.stream.base import Notice, dirty_members

__all__ = ["GROUP", "RedisStream", "create_group"]

GROUP = "appliers"

# allow-oom: at maxmemory (noeviction) appliers must keep their leases and go on applying,
# which is what frees memory (tails trimmed, notices deleted).
# KEYS: lease. ARGV: consumer, lease ms. Take a free lease or renew one's own.
_ACQUIRE_LUA = """#!lua flags=allow-oom
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
"""

_RELEASE_LUA = """#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: appliers. ARGV: consumer, now ms, ttl ms. Returns the live appliers.
_HEARTBEAT_LUA = """#!lua flags=allow-oom
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: dirty. ARGV: user, mark, user, mark, … Unmark the users whose mark did not move.
_CLEAN_LUA = """#!lua flags=allow-oom
local n = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
"""


# KEYS: a partition's stream. ARGV: posted (unix s), the ingest call's mark token ("":
# none), then user, seq per notice. One call per partition instead of one XADD per user: the
# client's cost is per command.
_POST_LUA = """
for i = 3, #ARGV, 2 do
  redis.call('XADD', KEYS[1], '*', 'u', ARGV[i], 's', ARGV[i + 1], 't', ARGV[1], 'm', ARGV[2])
end
return 1
"""


async def create_group(client: RedisClient, stream: str, group: str) -> None:
    """The consumer group ``group`` of ``stream`` from its start, creating the stream if
    missing; one that exists already is kept."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis_exc.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class RedisStream:
    """Redis Streams implementation of ``service.stream.base.IngestStream``."""

    def __init__(self, client: RedisClient, url: str, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be ≥ 1, got {partitions}")
        self.partitions = partitions
        self.url = url
        self._client = client
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._heartbeat = client.register_script(_HEARTBEAT_LUA)
        self._clean = client.register_script(_CLEAN_LUA)
        self._post = client.register_script(_POST_LUA)
        self._groups: set[int] = set()

    async def _ensure_group(self, partition: int) -> None:
        if partition in self._groups:
            return
        await create_group(self._client, stream_key(partition), GROUP)
        self._groups.add(partition)

    def _forget_group_if_gone(self, partition: int, exc: redis_exc.ResponseError) -> None:
        if "NOGROUP" in str(exc):  # Redis restarted without the stream: create it again
            self._groups.discard(partition)

    def _notices(self, partition: int, entries: Any) -> list[Notice]:
        notices = []
        for entry_id, fields in entries or ():
            if not fields:  # deleted while pending: nothing left to apply
                continue
            values = {as_text(k): as_text(v) for k, v in fields.items()}
            notices.append(
                Notice(
                    partition,
                    as_text(entry_id),
                    values["u"],
                    int(values["s"]),
                    float(values["t"]),
                    values.get("m", ""),  # absent in entries of a release before tokens
                )
            )
        return notices

    def _entry(
        self, user_id: str, seq: int, posted_s: float, token: str
    ) -> tuple[str, dict[Any, Any]]:
        """The stream key and fields of one notice (``_notices`` reads them back)."""
        key = stream_key(partition_of(user_id, self.partitions))
        return key, {"u": user_id, "s": seq, "t": f"{posted_s:.6f}", "m": token}

    async def post(self, user_id: str, seq: int, posted_s: float, token: str = "") -> None:
        async with redis_errors("post", self.url):
            key, fields = self._entry(user_id, seq, posted_s, token)
            await self._client.xadd(key, fields)

    async def post_batch(
        self, notices: Sequence[tuple[str, int]], posted_s: float, token: str = ""
    ) -> None:
        if not notices:
            return
        by_partition: dict[int, list[Any]] = {}
        for user_id, seq in notices:
            k = partition_of(user_id, self.partitions)
            by_partition.setdefault(k, [f"{posted_s:.6f}", token]).extend((user_id, seq))
        async with redis_errors("post_batch", self.url):
            if isinstance(self._client, RedisCluster):  # no scripts in a cluster pipeline
                await asyncio.gather(
                    *(self._post(keys=[stream_key(k)], args=a) for k, a in by_partition.items())
                )
                return
            pipe: Any
            async with self._client.pipeline(transaction=False) as pipe:  # closed on failure
                for k, args in by_partition.items():
                    await self._post(keys=[stream_key(k)], args=args, client=pipe)
                await pipe.execute()

    async def acquire(self, partition: int, consumer: str, lease_s: float) -> bool:
        async with redis_errors("acquire", self.url):
            await self._ensure_group(partition)
            ok = await self._acquire(
                keys=[lease_key(partition)], args=[consumer, max(1, int(lease_s * 1000))]
            )
        return bool(ok)

    async def release(self, partition: int, consumer: str) -> None:
        async with redis_errors("release", self.url):
            await self._release(keys=[lease_key(partition)], args=[consumer])

    async def read(self, partition: int, consumer: str, count: int, block_s: float) -> list[Notice]:
        key = stream_key(partition)
        async with redis_errors("read", self.url):
            await self._ensure_group(partition)
            try:
                reply: Any = await self._client.xreadgroup(
                    GROUP, consumer, {key: ">"}, count=count, block=max(1, int(block_s * 1000))
                )
            except redis_exc.ResponseError as exc:
                self._forget_group_if_gone(partition, exc)
                raise
        if isinstance(reply, dict):  # RESP3 answers a map
            reply = list(reply.items())
        return [n for _, entries in reply or () for n in self._notices(partition, entries)]

    async def claim(self, partition: int, consumer: str, count: int) -> list[Notice]:
        key = stream_key(partition)
        async with redis_errors("claim", self.url):
            await self._ensure_group(partition)
            try:
                reply = await self._client.xautoclaim(key, GROUP, consumer, 0, "0-0", count=count)
            except redis_exc.ResponseError as exc:
                self._forget_group_if_gone(partition, exc)
                raise
        return self._notices(partition, reply[1])

    async def ack(
        self,
        entries: Mapping[int, Sequence[str]],
        unmark: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        entries = {k: ids for k, ids in entries.items() if ids}
        members = {k: ms for k, ms in (unmark or {}).items() if ms}
        if not entries and not members:
            return
        async with redis_errors("ack", self.url):
            pipe: Any
            async with self._client.pipeline(transaction=False) as pipe:  # closed on failure
                for k, entry_ids in entries.items():
                    pipe.xack(stream_key(k), GROUP, *entry_ids)
                    pipe.xdel(stream_key(k), *entry_ids)
                for k, ms in members.items():
                    pipe.zrem(dirty_key(k), *ms)
                await pipe.execute()

    async def backlog(self, partition: int) -> int:
        async with redis_errors("backlog", self.url):
            return int(await self._client.xlen(stream_key(partition)))

    async def heartbeat(self, consumer: str, ttl_s: float) -> int:
        now_ms = int(time.time() * 1000)
        async with redis_errors("heartbeat", self.url):
            live = await self._heartbeat(
                keys=[APPLIERS_KEY], args=[consumer, now_ms, int(ttl_s * 1000)]
            )
        return int(live)

    async def leave(self, consumer: str) -> None:
        async with redis_errors("leave", self.url):
            await self._client.zrem(APPLIERS_KEY, consumer)

    async def mark(self, user_ids: Sequence[str], now_s: float, token: str = "") -> None:
        if not user_ids:
            return
        async with redis_errors("mark", self.url):
            pipe: Any
            async with self._client.pipeline(transaction=False) as pipe:
                for k, members in dirty_members(user_ids, token, self.partitions).items():
                    pipe.zadd(dirty_key(k), dict.fromkeys(members, now_s))
                await pipe.execute()

    async def dirty(self, partition: int, before_s: float, count: int) -> list[tuple[str, float]]:
        async with redis_errors("dirty", self.url):
            reply: Any = await self._client.zrangebyscore(
                dirty_key(partition), "-inf", before_s, start=0, num=count, withscores=True
            )
        return [(as_text(member), float(score)) for member, score in reply]

    async def clean(self, partition: int, marks: Sequence[tuple[str, float]]) -> None:
        if not marks:
            return
        args = [x for member, mark in marks for x in (member, repr(mark))]  # exact doubles
        async with redis_errors("clean", self.url):
            await self._clean(keys=[dirty_key(partition)], args=args)

    async def dirty_count(self, partition: int) -> int:
        async with redis_errors("dirty_count", self.url):
            return int(await self._client.zcard(dirty_key(partition)))

    async def close(self) -> None:
        return  # the client belongs to the store, which closes it
