"""Redis key layout (users, ingest partitions) and user-id validation.

All keys of one user share the hash tag ``{<user_id>}`` so that Redis Cluster places them in
one slot and a Lua script may touch all of them atomically. Braces are therefore forbidden in
user ids: a ``}`` inside an id would end the hash tag early.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

from service.errors import InvalidUserId
from service.user_ids import is_user_id

__all__ = [
    "APPLIERS_KEY",
    "KEY_PREFIX",
    "UserKeys",
    "dirty_key",
    "lease_key",
    "partition_of",
    "stream_key",
    "user_keys",
    "validate_user_id",
]

KEY_PREFIX = "solar"


class UserKeys(NamedTuple):
    """The keys of one user, in the order the store's Lua scripts expect them.

    ``solar:{<user_id>}:state`` (the state blob), ``:log`` (the tail of the event log: a list
    of chunks of 20-byte records, oldest first, only those not yet durable or applied),
    ``:pos`` (a hash: ``seq``, ``applied``, ``durable``, ``len``, ``gen``) and ``:dedup`` (the
    ring of the last W identity digests, ``service.store.dedup_ring``).
    """

    state: str
    log: str
    pos: str
    dedup: str


def validate_user_id(user_id: str) -> str:
    """Return ``user_id`` unchanged if it follows the user-id rule (``service.user_ids``).

    Raises:
        InvalidUserId: for anything else, including non-strings.
    """
    if not is_user_id(user_id):
        raise InvalidUserId(user_id)
    return user_id


def user_keys(user_id: str) -> UserKeys:
    """All keys of a user, validating the id once."""
    tag = f"{KEY_PREFIX}:{{{validate_user_id(user_id)}}}"
    return UserKeys(state=f"{tag}:state", log=f"{tag}:log", pos=f"{tag}:pos", dedup=f"{tag}:dedup")


def partition_of(user_id: str, partitions: int) -> int:
    """The ingest-stream partition of a user: a stable hash (CRC-32 of the UTF-8 id) mod P."""
    return zlib.crc32(user_id.encode("utf-8")) % partitions


def stream_key(partition: int) -> str:
    """The stream of one partition, ``solar:ingest:{p<k>}``: its own hash tag, so a cluster
    spreads the partitions over its masters."""
    return f"{KEY_PREFIX}:ingest:{{p{partition}}}"


def lease_key(partition: int) -> str:
    """Who applies partition k now (same slot as its stream)."""
    return f"{stream_key(partition)}:lease"


def dirty_key(partition: int) -> str:
    """Users of partition k whose ingest may not be applied yet, scored by when it began
    (same slot as the stream): what the sweeper checks."""
    return f"{stream_key(partition)}:dirty"


APPLIERS_KEY = f"{KEY_PREFIX}:appliers"  # sorted set: applier id → last heartbeat (ms)
