"""The work queue of ``solar backfill`` (docs/DESIGN.md §3, "Rollouts"): a Redis Stream and
its consumer group, so distribution and resumption come from Redis, not from a scheduler of
our own.

Per model version, in one slot (``service.store.keys.backfill_keys``): the stream holds work
items (a batch of user ids each) and the ``meta`` hash the progress: ``cursor`` (the last
user listed from the durable history), ``listed`` (1 once every user is listed), ``total``
(users listed), ``done`` (users covered) and ``events`` (events folded in).

- ``list_page`` appends one page of users as items and moves the cursor in ONE script, so a
  lister killed mid-way resumes at the page after the last one stored, nothing listed twice.
- ``take`` gives a consumer first the items another consumer took and left idle for longer
  than ``claim_idle_s`` (XAUTOCLAIM: a killed backfill's), then new ones (XREADGROUP).
- ``done`` acknowledges and deletes an item and adds its counts to the progress in ONE
  script: a consumer killed before it re-runs the item later (idempotent: a user's state is
  advanced from its own covered position), never counted twice.

Every consumer of the group (``solar backfill --processes N``, or several backfills on
several machines with the same environment) shares the work; XLEN is what remains.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from service.store.keys import backfill_keys
from service.store.redis_client import RedisClient, as_text, redis_errors
from service.stream.redis_stream import create_group

__all__ = ["GROUP", "BackfillItem", "BackfillProgress", "BackfillQueue"]

GROUP = "backfill"
USERS_PER_ITEM = 32

# KEYS: stream, meta. ARGV: last user of the page, '1' if it is the last page, items (each
# users joined by '\n'). Returns the total listed so far.
_LIST_LUA = """
local n = 0
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'users', ARGV[i])
  local _, count = string.gsub(ARGV[i], '\\n', '')
  n = n + count + 1
end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'cursor', ARGV[1]) end
if ARGV[2] == '1' then redis.call('HSET', KEYS[2], 'listed', 1) end
return redis.call('HINCRBY', KEYS[2], 'total', n)
"""

# KEYS: stream, meta. ARGV: entry id, users covered, events folded in.
_DONE_LUA = """
if redis.call('XACK', KEYS[1], 'backfill', ARGV[1]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[1])
  redis.call('HINCRBY', KEYS[2], 'done', tonumber(ARGV[2]))
  redis.call('HINCRBY', KEYS[2], 'events', tonumber(ARGV[3]))
  return 1
end
return 0
"""


class BackfillItem(NamedTuple):
    """One work item: its stream entry id and the users to cover."""

    entry_id: str
    users: list[str]


class BackfillProgress(NamedTuple):
    """Where a version's backfill stands."""

    cursor: str  # last user listed
    listed: bool  # every user of the durable history is listed
    total: int  # users listed
    done: int  # users covered
    events: int  # events folded in
    remaining: int  # items not yet done (XLEN)

    @property
    def complete(self) -> bool:
        return self.listed and self.remaining == 0


class BackfillQueue:
    """One model version's backfill work on a Redis Stream consumer group."""

    def __init__(self, client: RedisClient, url: str, version: str) -> None:
        self.keys = backfill_keys(version)
        self.url = url
        self._client = client
        self._list = client.register_script(_LIST_LUA)
        self._done = client.register_script(_DONE_LUA)

    async def ensure_group(self) -> None:
        async with redis_errors("backfill_group", self.url):
            await create_group(self._client, self.keys.stream, GROUP)

    async def progress(self) -> BackfillProgress:
        async with redis_errors("backfill_progress", self.url):
            fields = await self._client.hgetall(self.keys.meta)
            meta = {as_text(k): as_text(v) for k, v in fields.items()}
            remaining = int(await self._client.xlen(self.keys.stream))
        return BackfillProgress(
            cursor=meta.get("cursor", ""),
            listed=meta.get("listed") == "1",
            total=int(meta.get("total", 0)),
            done=int(meta.get("done", 0)),
            events=int(meta.get("events", 0)),
            remaining=remaining,
        )

    async def list_page(self, users: list[str], *, last_page: bool) -> int:
        """Append ``users`` (a page in id order) as items of ``USERS_PER_ITEM``; the total."""
        items = [
            "\n".join(users[i : i + USERS_PER_ITEM]) for i in range(0, len(users), USERS_PER_ITEM)
        ]
        args = [users[-1] if users else "", "1" if last_page else "0", *items]
        async with redis_errors("backfill_list", self.url):
            return int(await self._list(keys=[self.keys.stream, self.keys.meta], args=args))

    async def take(
        self, consumer: str, *, claim_idle_s: float, block_s: float
    ) -> BackfillItem | None:
        """The next item for ``consumer``: an idle one of another consumer, else a new one."""
        async with redis_errors("backfill_take", self.url):
            claimed: Any = await self._client.xautoclaim(
                self.keys.stream, GROUP, consumer, int(claim_idle_s * 1_000), "0-0", count=1
            )
            entries = claimed[1]
            if not entries:
                reply: Any = await self._client.xreadgroup(
                    GROUP, consumer, {self.keys.stream: ">"}, count=1, block=int(block_s * 1_000)
                )
                entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            if fields:  # an entry deleted while pending comes back without fields
                users = as_text(fields.get(b"users", fields.get("users", ""))).split("\n")
                return BackfillItem(as_text(entry_id), [u for u in users if u])
            await self.done(BackfillItem(as_text(entry_id), []), 0)
        return None

    async def done(self, item: BackfillItem, events: int) -> bool:
        """Acknowledge and delete ``item``, adding its users and events to the progress; False
        when it was done already (by a consumer that had claimed it too)."""
        args: list[str | int] = [item.entry_id, len(item.users), events]
        async with redis_errors("backfill_done", self.url):
            return bool(await self._done(keys=[self.keys.stream, self.keys.meta], args=args))

    async def clear(self) -> None:
        """Forget the version's backfill (its stream and progress)."""
        async with redis_errors("backfill_clear", self.url):
            await self._client.delete(self.keys.stream, self.keys.meta)
