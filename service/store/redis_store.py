"""The production store on Redis or Redis Cluster (docs/DESIGN.md §4): one Lua script per operation.

The keys of a user share a hash tag (``service.store.keys``), so each script touches one
slot and runs atomically on one master. The tail of the log is a list of chunks of
``CHUNK_RECORDS`` records: an append rewrites at most the last chunk and trimming drops (or
shortens) head chunks, so no write copies the tail whole. The dedup ring is one string
(``service.store.dedup_ring``) searched with ``string.find`` (plain) and patched with
``SETRANGE``, never rewritten whole. Semantics are those of ``service.store.base``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from service.errors import StoreBusy, StoreError
from service.store.base import (
    APPEND_REPAIR,
    APPEND_UNKNOWN,
    CHUNK_RECORDS,
    AppendRequest,
    AppendResult,
    LogSlice,
    ObservedStore,
    StateCommit,
    StoreObserver,
    UserPosition,
    check_append,
)
from service.store.dedup_ring import BLOCK
from service.store.eventlog import RECORD_SIZE
from service.store.keys import (
    KEY_PREFIX,
    applied_field,
    state_key_pattern,
    user_keys,
    validate_model_version,
)
from service.store.redis_client import RedisClient, as_text, redis_errors
from service.store.redis_scripts import (
    APPEND_BATCH_LUA,
    APPEND_LUA,
    COMMIT_LUA,
    DELETE_LUA,
    DURABLE_BATCH_LUA,
    DURABLE_LUA,
    READ_LUA,
    RESTORE_LUA,
    RETIRE_LUA,
)

__all__ = ["DELETED_FENCE_TTL_S", "STATE_COUNTS_KEY", "RedisStore"]

# hash: model version → users with a state under it (kept at creation and deletion, so the
# states-per-version gauge costs one HGETALL at any number of users)
STATE_COUNTS_KEY = f"{KEY_PREFIX}:models:states"

DELETED_FENCE_TTL_S = 7 * 24 * 3600  # a deleted user's position outlives any late applier
# Users per batched script call: Redis runs a script without serving anyone else, so a
# 1,000-event body over 200 users in one call (~25 ms of Redis time) would hold /rank's GETs
# that long; calls of 32 users (~4 ms) go out in one pipeline, between which Redis serves
# other clients, at ~30 µs of client CPU per call.
_BATCH_USERS = 32

_CHUNK_BYTES = CHUNK_RECORDS * RECORD_SIZE

logger = logging.getLogger(__name__)


def _append_script_input(
    request: AppendRequest, dedup_window: int, not_after_s: float | None, create: bool
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``APPEND_LUA`` for one user's records."""
    args = [request.records, request.digests, *_append_head(dedup_window, not_after_s, create)]
    return _append_keys(request.user_id), args


def _append_head(dedup_window: int, not_after_s: float | None, create: bool) -> list[Any]:
    """The ARGV both append scripts share: window, chunk bytes, block, not-after, create flag."""
    deadline = "" if not_after_s is None else f"{not_after_s:.6f}"
    return [dedup_window, _CHUNK_BYTES, BLOCK, deadline, "1" if create else "0"]


def _append_keys(user_id: str) -> list[str]:
    """The KEYS of one user in ``APPEND_LUA`` and ``APPEND_BATCH_LUA``."""
    keys = user_keys(user_id)
    return [keys.log, keys.pos, keys.dedup]


def _batch_results(reply: Any, users: int) -> list[AppendResult]:
    """An ``APPEND_BATCH_LUA`` reply; raises StoreBusy for a step refused as too late."""
    if len(reply) == 1:
        raise StoreBusy(users)
    header = np.frombuffer(reply[0], dtype="<f8").reshape(users, 8).astype(np.int64)
    undurable = bytes(reply[1])
    ends = np.cumsum(header[:, 7]).tolist()
    results = []
    for row, end in zip(header.tolist(), ends, strict=True):
        status, accepted, duplicates, refused, seq, applied, durable, length = row
        if status == -1:
            results.append(APPEND_REPAIR)
        elif status == -3:
            results.append(APPEND_UNKNOWN)
        else:
            records = undurable[end - length : end]
            results.append(
                AppendResult(accepted, duplicates, refused, seq, applied, durable, records)
            )
    return results


def _append_result(reply: Any) -> AppendResult:
    """An ``APPEND_LUA`` reply; raises StoreBusy for a step refused as too late."""
    if int(reply[0]) == -2:
        raise StoreBusy(1)
    if int(reply[0]) == -1:
        return APPEND_REPAIR
    if int(reply[0]) == -3:
        return APPEND_UNKNOWN
    k, dups, refused, seq, applied, durable = (int(x) for x in reply[:6])
    return AppendResult(k, dups, refused, seq, applied, durable, bytes(reply[6] or b""))


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
        self._append = client.register_script(APPEND_LUA)  # EVALSHA, loads on NOSCRIPT
        self._append_batch = client.register_script(APPEND_BATCH_LUA)
        self._durable = client.register_script(DURABLE_LUA)
        self._durable_batch = client.register_script(DURABLE_BATCH_LUA)
        # One script call per _BATCH_USERS users of a request on a single Redis (the Python
        # cost of a call, ~20-40 µs to pack and parse, times 200 users was a third of
        # /ingest's CPU); a cluster spreads the users' slots over masters: one call per user.
        self._batched = not isinstance(client, RedisCluster)
        self._read = client.register_script(READ_LUA)
        self._commit = client.register_script(COMMIT_LUA)
        self._delete = client.register_script(DELETE_LUA)
        self._restore = client.register_script(RESTORE_LUA)
        self._retire = client.register_script(RETIRE_LUA)

    async def _call(self, op: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        async with self._timed(op), redis_errors(op, self.url):
            return await script(keys=keys, args=args)

    async def _script_batch(
        self, op: str, script: Any, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        """One script per (keys, args): one pipeline on a single Redis (not a transaction:
        each script is atomic on its own). A cluster client refuses scripts in pipelines:
        there the calls go out concurrently (32 at a time), each to its slot's master."""
        if not calls:
            return []
        if isinstance(self._client, RedisCluster):
            gate = asyncio.Semaphore(32)

            async def one(keys: list[str], args: list[Any]) -> Any:
                async with gate:
                    return await self._call(op, script, keys, args)

            return list(await asyncio.gather(*(one(k, a) for k, a in calls)))
        if len(calls) == 1:  # one EVALSHA: a pipeline would cost a round trip more (below)
            return [await self._call(op, script, *calls[0])]
        async with self._timed(op), redis_errors(op, self.url):
            try:
                return await self._evalsha_pipeline(script, calls)
            except NoScriptError:  # a restarted or flushed Redis: load it, run them all again
                script.sha = await self._client.script_load(script.script)
                return await self._evalsha_pipeline(script, calls)

    async def _evalsha_pipeline(
        self, script: Any, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        """The calls as bare EVALSHAs in one pipeline: redis-py's script objects in a
        pipeline first send SCRIPT EXISTS, a second round trip on every batch. Every call runs
        the same script, so a NOSCRIPT means none of them ran."""
        pipe: Any
        async with self._client.pipeline(transaction=False) as pipe:  # closed on failure
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return list(await pipe.execute())

    async def append_batch(
        self,
        requests: Sequence[AppendRequest],
        *,
        dedup_window: int,
        not_after_s: float | None = None,
        create: bool = False,
    ) -> list[AppendResult]:
        for r in requests:
            check_append(r.records, r.digests, dedup_window)
        if not requests:
            return []
        if self._batched:
            head = _append_head(dedup_window, not_after_s, create)
            parts = [requests[i : i + _BATCH_USERS] for i in range(0, len(requests), _BATCH_USERS)]
            batches = [
                (
                    [k for r in part for k in _append_keys(r.user_id)],
                    head + [x for r in part for x in (r.records, r.digests)],
                )
                for part in parts
            ]
            replies = await self._script_batch("append_batch", self._append_batch, batches)
            return [
                result
                for part, reply in zip(parts, replies, strict=True)
                for result in _batch_results(reply, len(part))
            ]
        if len({r.user_id for r in requests}) < len(requests):
            # A user twice in one batch: keep its steps in order (the concurrent path would not).
            out: list[AppendResult] = []
            for r in requests:
                out += await self.append_batch(
                    [r], dedup_window=dedup_window, not_after_s=not_after_s, create=create
                )
            return out
        calls = [_append_script_input(r, dedup_window, not_after_s, create) for r in requests]
        replies = await self._script_batch("append_batch", self._append, calls)
        return [_append_result(reply) for reply in replies]

    async def mark_durable(self, marks: Sequence[tuple[str, int]]) -> None:
        if not marks:
            return
        if self._batched:
            parts = [marks[i : i + _BATCH_USERS] for i in range(0, len(marks), _BATCH_USERS)]
            batches = [
                (
                    [k for u, _ in part for k in (user_keys(u).pos, user_keys(u).log)],
                    [_CHUNK_BYTES, *(seq for _, seq in part)],
                )
                for part in parts
            ]
            await self._script_batch("mark_durable", self._durable_batch, batches)
            return
        calls = [([user_keys(u).pos, user_keys(u).log], [seq, _CHUNK_BYTES]) for u, seq in marks]
        await self._script_batch("mark_durable", self._durable, calls)

    async def get_state(self, user_id: str, version: str) -> bytes | None:
        key = user_keys(user_id).state(version)
        async with self._timed("get_state"), redis_errors("get_state", self.url):
            state = await self._client.get(key)
        return cast("bytes | None", state)  # decode_responses is off: replies are bytes

    async def position(self, user_id: str, version: str) -> UserPosition:
        key = user_keys(user_id).pos
        async with self._timed("position"), redis_errors("position", self.url):
            seq, applied = await self._client.hmget(key, ["seq", applied_field(version)])
        return UserPosition(int(seq or 0), int(applied or 0))

    async def read_log(
        self, user_id: str, version: str | None, *, unapplied_only: bool
    ) -> LogSlice:
        keys, args = _read_script_input(user_id, version, unapplied_only)
        return _log_slice(await self._call("read_log", self._read, keys, args))

    async def read_logs(
        self, reads: Sequence[tuple[str, str | None]], *, unapplied_only: bool
    ) -> list[LogSlice]:
        calls = [_read_script_input(u, v, unapplied_only) for u, v in reads]
        replies = await self._script_batch("read_log", self._read, calls)
        return [_log_slice(reply) for reply in replies]

    async def commit_state(
        self,
        user_id: str,
        version: str,
        state: bytes,
        *,
        gen: int,
        expected_applied: int,
        applied: int,
    ) -> bool:
        commit = StateCommit(user_id, version, state, gen, expected_applied, applied)
        return (await self.commit_states([commit]))[0]

    async def commit_states(self, commits: Sequence[StateCommit]) -> list[bool]:
        calls = [_commit_script_input(c) for c in commits]
        if len(calls) == 1:
            replies = [await self._call("commit", self._commit, *calls[0])]
        else:
            replies = await self._script_batch("commit", self._commit, calls)
        done = [int(reply) for reply in replies]
        created: dict[str, int] = {}
        for c, d in zip(commits, done, strict=True):
            if d == 2:
                created[c.version] = created.get(c.version, 0) + 1
        if created:
            await self._count_states(created)
        return [self._cas_result(d > 0) for d in done]

    async def restore(
        self, user_id: str, *, expected_seq: int | None, seq: int, ring: bytes
    ) -> bool:
        keys = user_keys(user_id)
        expected = "" if expected_seq is None else str(expected_seq)
        ok = await self._call(
            "restore",
            self._restore,
            [keys.log, keys.pos, keys.dedup],
            [expected, seq, ring, keys.state_prefix],
        )
        return bool(ok)

    async def delete(self, user_id: str) -> bool:
        keys = user_keys(user_id)
        existed, *versions = await self._call(
            "delete",
            self._delete,
            [keys.log, keys.pos, keys.dedup],
            [DELETED_FENCE_TTL_S, keys.state_prefix],
        )
        await self._count_states({bytes(v).decode(): -1 for v in versions})
        return int(existed) > 0

    async def retire(self, version: str) -> int:
        """Delete every user's state under ``version`` (SCAN on every master of a cluster)."""
        field = applied_field(version)
        deleted = 0
        async with redis_errors("retire", self.url):
            async for key in self._client.scan_iter(match=state_key_pattern(version), count=1_000):
                pos = key.decode().rsplit(":state:", 1)[0] + ":pos"
                deleted += int(await self._retire(keys=[key, pos], args=[field]))
            await self._client.hdel(STATE_COUNTS_KEY, version)
        return deleted

    async def state_counts(self) -> dict[str, int]:
        """Users with a state, per model version."""
        async with redis_errors("state_counts", self.url):
            counts = await self._client.hgetall(STATE_COUNTS_KEY)
        return {as_text(k): int(v) for k, v in counts.items()}

    async def _count_states(self, deltas: dict[str, int]) -> None:
        """Keep the per-version state counts; best effort: the write it follows has happened
        (a full or unreachable Redis leaves the gauge off by one, never fails the write)."""
        try:
            async with redis_errors("state_counts", self.url):
                for version, delta in deltas.items():
                    version = validate_model_version(version)
                    await self._client.hincrby(STATE_COUNTS_KEY, version, delta)
        except StoreError as exc:
            logger.warning("per-version state counts not updated: %s", exc)

    async def ping(self) -> None:
        async with self._timed("ping"), redis_errors("ping", self.url):
            await self._client.ping()

    async def close(self) -> None:
        """Close the client and its connections; safe to call more than once."""
        await self._client.aclose()


def _read_script_input(
    user_id: str, version: str | None, unapplied_only: bool
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of ``READ_LUA`` for one user."""
    keys = user_keys(user_id)
    field = "" if version is None else applied_field(version)
    script_keys = [keys.log, keys.pos] + ([] if version is None else [keys.state(version)])
    return script_keys, ["unapplied" if unapplied_only else "all", _CHUNK_BYTES, field]


def _log_slice(reply: Any) -> LogSlice:
    state, seq, applied, gen, length, records, durable, exists = reply
    return LogSlice(
        state,
        int(seq),
        int(applied),
        int(gen),
        int(length),
        bytes(records or b""),
        durable=int(durable),
        exists=bool(int(exists)),
    )


def _commit_script_input(c: StateCommit) -> tuple[list[str], list[Any]]:
    """The keys and arguments of ``COMMIT_LUA`` for one commit."""
    keys = user_keys(c.user_id)
    args = [bytes(c.state), c.gen, c.expected_applied, c.applied, _CHUNK_BYTES]
    return [keys.state(c.version), keys.pos, keys.log], [*args, applied_field(c.version)]
