"""The registry of active model versions (docs/DESIGN.md §3, "Rollouts"): which versions
every applier keeps current, and where their checkpoints are.

One Redis hash, ``solar:models``: version → ``{"path": checkpoint directory, "seen_ms": last
registration}``. ``solar serve`` and ``solar worker`` register their model's version at start
and again every lease round (``seen_ms`` says who still runs it); ``solar backfill`` registers
the new version before building anything, so events arriving during the backfill are applied
to it too. Appliers read the registry every lease round and load a checkpoint per version.
Only ``solar retire`` removes a version; at most ``limit`` versions are registered at once
(each costs a state per user and an update per event). ``MemoryModels`` is the embedded twin.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple, Protocol, runtime_checkable

from service.errors import TooManyModelVersions
from service.store.keys import MODELS_KEY, validate_model_version
from service.store.redis_client import RedisClient, as_text, redis_errors

__all__ = ["ActiveVersion", "MemoryModels", "ModelRegistry", "RedisModels"]

# KEYS: models. ARGV: version, entry, limit. 1: registered; 0: the limit is reached.
_REGISTER_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
   or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""


class ActiveVersion(NamedTuple):
    """A registered model version: its checkpoint directory and when it was last registered
    (unix ms)."""

    version: str
    model_path: str
    seen_ms: int


@runtime_checkable
class ModelRegistry(Protocol):
    """The active model versions; see the module docstring."""

    async def register(self, version: str, model_path: str, *, limit: int) -> None:
        """Register (or refresh) ``version``.

        Raises:
            TooManyModelVersions: ``limit`` other versions are registered.
        """
        ...

    async def active(self) -> list[ActiveVersion]:
        """The registered versions, by version."""
        ...

    async def remove(self, version: str) -> bool:
        """Unregister ``version``; False if it was not registered."""
        ...


def _entry(model_path: str) -> str:
    return json.dumps({"path": model_path, "seen_ms": int(time.time() * 1_000)})


def _parse(version: str, raw: str | bytes) -> ActiveVersion:
    entry: dict[str, Any] = json.loads(raw)
    return ActiveVersion(version, str(entry["path"]), int(entry["seen_ms"]))


class MemoryModels:
    """The registry in one process (the embedded store's)."""

    def __init__(self) -> None:
        self._entries: dict[str, str] = {}

    async def register(self, version: str, model_path: str, *, limit: int) -> None:
        validate_model_version(version)
        if version not in self._entries and len(self._entries) >= limit:
            raise TooManyModelVersions(version, list(self._entries), limit)
        self._entries[version] = _entry(model_path)

    async def active(self) -> list[ActiveVersion]:
        return [_parse(v, raw) for v, raw in sorted(self._entries.items())]

    async def remove(self, version: str) -> bool:
        return self._entries.pop(validate_model_version(version), None) is not None


class RedisModels:
    """The registry in the shared Redis (one hash; on a cluster, in one slot)."""

    def __init__(self, client: RedisClient, url: str) -> None:
        self._client = client
        self.url = url
        self._register = client.register_script(_REGISTER_LUA)

    async def register(self, version: str, model_path: str, *, limit: int) -> None:
        validate_model_version(version)
        async with redis_errors("register_model", self.url):
            entry = _entry(model_path)
            done = await self._register(keys=[MODELS_KEY], args=[version, entry, limit])
        if not int(done):
            raise TooManyModelVersions(version, [a.version for a in await self.active()], limit)

    async def active(self) -> list[ActiveVersion]:
        async with redis_errors("models", self.url):
            entries = await self._client.hgetall(MODELS_KEY)
        return sorted(_parse(as_text(k), v) for k, v in entries.items())

    async def remove(self, version: str) -> bool:
        async with redis_errors("retire_model", self.url):
            return bool(await self._client.hdel(MODELS_KEY, validate_model_version(version)))
