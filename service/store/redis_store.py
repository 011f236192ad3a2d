"""The production store on Redis or Redis Cluster (DESIGN §4): one Lua script per operation.

The keys of a user share a hash tag (``service.store.keys``), so each script touches one
slot and runs atomically on one master. The log is a list of chunks of ``CHUNK_RECORDS``
records: an append rewrites at most the tail chunk and trimming drops (or shortens) head
chunks, so no write copies the log whole. Semantics are those of ``service.store.base``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster

from service.store.base import (
    AppendRequest,
    AppendResult,
    LogSlice,
    ObservedStore,
    StoreObserver,
    UserPosition,
    check_append,
)
from service.store.keys import user_keys
from service.store.redis_client import RedisClient, redis_errors

__all__ = ["CHUNK_RECORDS", "DELETED_FENCE_TTL_S", "RedisStore"]

CHUNK_RECORDS = 256  # 5 KB per list element
DELETED_FENCE_TTL_S = 7 * 24 * 3600  # a deleted user's position outlives any late applier

# KEYS: log, pos, dedup. ARGV: records, identities, log cap, dedup window, chunk bytes.
_APPEND_LUA = """
local recs, ids = ARGV[1], ARGV[2]
local cap, window, chunk = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local pos = redis.call('HMGET', KEYS[2], 'seq', 'applied', 'len')
local seq, applied, len = tonumber(pos[1] or '0'), tonumber(pos[2] or '0'), tonumber(pos[3] or '0')
local n = #recs / 20
local fresh = {}
for i = 0, n - 1 do
  local id = string.sub(ids, i * 16 + 1, i * 16 + 16)
  if not redis.call('ZSCORE', KEYS[3], id) then
    seq = seq + 1
    redis.call('ZADD', KEYS[3], seq, id)
    fresh[#fresh + 1] = string.sub(recs, i * 20 + 1, i * 20 + 20)
  end
end
if #fresh > 0 then
  local data = table.concat(fresh)
  local tail = redis.call('LINDEX', KEYS[1], -1)
  if tail and #tail < chunk then
    local room = chunk - #tail
    redis.call('LSET', KEYS[1], -1, tail .. string.sub(data, 1, room))
    data = string.sub(data, room + 1)
  end
  while #data > 0 do
    redis.call('RPUSH', KEYS[1], string.sub(data, 1, chunk))
    data = string.sub(data, chunk + 1)
  end
  len = len + #fresh
  while len > cap do
    local head = redis.call('LINDEX', KEYS[1], 0)
    local excess, held = len - cap, #head / 20
    if held <= excess then
      redis.call('LPOP', KEYS[1])
      len = len - held
    else
      redis.call('LSET', KEYS[1], 0, string.sub(head, excess * 20 + 1))
      len = cap
    end
  end
  redis.call('HSET', KEYS[2], 'seq', seq, 'len', len)
  redis.call('PERSIST', KEYS[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', seq - window)
end
return {#fresh, n - #fresh, seq, applied}
"""

# KEYS: state, log, pos. ARGV: "unapplied" | "all", chunk records.
_READ_LUA = """
local pos = redis.call('HMGET', KEYS[3], 'seq', 'applied', 'len', 'gen')
local seq, applied = tonumber(pos[1] or '0'), tonumber(pos[2] or '0')
local len, gen = tonumber(pos[3] or '0'), tonumber(pos[4] or '0')
local want = len
if ARGV[1] == 'unapplied' then want = math.min(len, seq - applied) end
local records = ''
if want > 0 then
  local chunks = math.floor(want / tonumber(ARGV[2])) + 2
  records = table.concat(redis.call('LRANGE', KEYS[2], -chunks, -1))
  records = string.sub(records, #records - want * 20 + 1)
end
return {redis.call('GET', KEYS[1]) or false, seq, applied, gen, len, records}
"""

# KEYS: state, pos. ARGV: state blob, gen, expected applied, new applied.
_COMMIT_LUA = """
local pos = redis.call('HMGET', KEYS[2], 'seq', 'applied', 'gen')
local seq, applied, gen = tonumber(pos[1] or '0'), tonumber(pos[2] or '0'), tonumber(pos[3] or '0')
if gen ~= tonumber(ARGV[2]) or applied ~= tonumber(ARGV[3]) or seq < tonumber(ARGV[4]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'applied', ARGV[4])
return 1
"""

# KEYS: state, log, pos, dedup. ARGV: fence ttl (s). The position stays as a fence.
_DELETE_LUA = """
local existed = redis.call('EXISTS', KEYS[1], KEYS[2])
local pos = redis.call('HMGET', KEYS[3], 'seq', 'gen')
local seq, gen = tonumber(pos[1] or '0'), tonumber(pos[2] or '0')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
if seq > 0 or existed > 0 then
  redis.call('HSET', KEYS[3], 'seq', seq, 'applied', seq, 'len', 0, 'gen', gen + 1)
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[1]))
end
return existed
"""


def _append_script_input(
    request: AppendRequest, log_cap: int, dedup_window: int
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``_APPEND_LUA`` for one user's records."""
    keys = user_keys(request.user_id)
    args: list[Any] = [request.records, request.identities, log_cap, dedup_window]
    return [keys.log, keys.pos, keys.dedup], [*args, CHUNK_RECORDS * 20]


class RedisStore(ObservedStore):
    """Redis-backed store over a redis-py asyncio client (single server or cluster).

    Args:
        client: from ``service.store.redis_client.connect_redis``; closed by :meth:`close`.
        url: the URL shown in errors (password hidden).
        observer: receives op latencies and lost compare-and-sets.
    """

    def __init__(
        self, client: RedisClient, url: str, *, observer: StoreObserver | None = None
    ) -> None:
        super().__init__(observer)
        self.url = url
        self._client = client
        self._append = client.register_script(_APPEND_LUA)  # EVALSHA, loads on NOSCRIPT
        self._read = client.register_script(_READ_LUA)
        self._commit = client.register_script(_COMMIT_LUA)
        self._delete = client.register_script(_DELETE_LUA)

    async def _call(self, op: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        async with self._timed(op), redis_errors(op, self.url):
            return await script(keys=keys, args=args)

    async def append_events(
        self,
        user_id: str,
        records: bytes,
        identities: bytes,
        *,
        log_cap: int,
        dedup_window: int,
    ) -> AppendResult:
        check_append(records, identities, log_cap, dedup_window)
        request = AppendRequest(user_id, records, identities)
        keys, args = _append_script_input(request, log_cap, dedup_window)
        reply = await self._call("append", self._append, keys, args)
        return AppendResult(*(int(x) for x in reply))

    async def append_batch(
        self, requests: Sequence[AppendRequest], *, log_cap: int, dedup_window: int
    ) -> list[AppendResult]:
        """One pipeline on a single Redis (not a transaction: each user's script is atomic on
        its own). A cluster client refuses scripts in pipelines: there the calls go out
        concurrently instead, each to its slot's master."""
        if not requests:
            return []
        for r in requests:
            check_append(r.records, r.identities, log_cap, dedup_window)
        if isinstance(self._client, RedisCluster):
            return await self._append_concurrently(requests, log_cap, dedup_window)
        async with self._timed("append_batch"), redis_errors("append_batch", self.url):
            pipe: Any
            async with self._client.pipeline(transaction=False) as pipe:  # closed on failure
                for r in requests:
                    keys, args = _append_script_input(r, log_cap, dedup_window)
                    await self._append(keys=keys, args=args, client=pipe)
                replies = await pipe.execute()
        return [AppendResult(*(int(x) for x in reply)) for reply in replies]

    async def _append_concurrently(
        self, requests: Sequence[AppendRequest], log_cap: int, dedup_window: int
    ) -> list[AppendResult]:
        """Users concurrently (32 at a time), each user's requests in their order."""
        by_user: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_user.setdefault(r.user_id, []).append(i)
        results: list[AppendResult | None] = [None] * len(requests)
        gate = asyncio.Semaphore(32)

        async def one_user(indices: list[int]) -> None:
            async with gate:
                for i in indices:
                    r = requests[i]
                    results[i] = await self.append_events(
                        r.user_id, r.records, r.identities,
                        log_cap=log_cap, dedup_window=dedup_window,
                    )  # fmt: skip

        await asyncio.gather(*(one_user(indices) for indices in by_user.values()))
        return [r for r in results if r is not None]

    async def get_state(self, user_id: str) -> bytes | None:
        key = user_keys(user_id).state
        async with self._timed("get_state"), redis_errors("get_state", self.url):
            state = await self._client.get(key)
        return cast("bytes | None", state)  # decode_responses is off: replies are bytes

    async def position(self, user_id: str) -> UserPosition:
        key = user_keys(user_id).pos
        async with self._timed("position"), redis_errors("position", self.url):
            seq, applied = await self._client.hmget(key, ["seq", "applied"])
        return UserPosition(int(seq or 0), int(applied or 0))

    async def read_log(self, user_id: str, *, unapplied_only: bool) -> LogSlice:
        keys = user_keys(user_id)
        args = ["unapplied" if unapplied_only else "all", CHUNK_RECORDS]
        reply = await self._call("read_log", self._read, [keys.state, keys.log, keys.pos], args)
        state, seq, applied, gen, length, records = reply
        return LogSlice(state, int(seq), int(applied), int(gen), int(length), bytes(records or b""))

    async def commit_state(
        self, user_id: str, state: bytes, *, gen: int, expected_applied: int, applied: int
    ) -> bool:
        keys = user_keys(user_id)
        args = [bytes(state), gen, expected_applied, applied]
        ok = await self._call("commit", self._commit, [keys.state, keys.pos], args)
        return self._cas_result(bool(ok))

    async def delete(self, user_id: str) -> bool:
        keys = user_keys(user_id)
        existed = await self._call("delete", self._delete, list(keys), [DELETED_FENCE_TTL_S])
        return int(existed) > 0

    async def ping(self) -> None:
        async with self._timed("ping"), redis_errors("ping", self.url):
            await self._client.ping()

    async def close(self) -> None:
        """Close the client and its connections; safe to call more than once."""
        await self._client.aclose()
