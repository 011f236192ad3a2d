"""Redis key layout (users, ingest partitions, model versions) and id validation.

All keys of one user share the hash tag ``{<user_id>}`` so that Redis Cluster places them in
one slot and a Lua script may touch all of them atomically. Braces are therefore forbidden in
user ids: a ``}`` inside an id would end the hash tag early. A user has one state per model
version (``solar:{<user_id>}:state:<version>``, docs/DESIGN.md §4), so model versions are
restricted to characters that cannot break a key, a hash field or a SCAN pattern.
"""

from __future__ import annotations

import re
import zlib
from typing import NamedTuple

from service.errors import InvalidModelVersion, InvalidUserId
from service.user_ids import is_user_id

__all__ = [
    "APPLIERS_KEY",
    "KEY_PREFIX",
    "MODELS_KEY",
    "UserKeys",
    "BackfillKeys",
    "applied_field",
    "backfill_keys",
    "dirty_key",
    "lease_key",
    "partition_of",
    "stream_key",
    "state_key_pattern",
    "user_keys",
    "validate_model_version",
    "validate_user_id",
]

KEY_PREFIX = "solar"

_MODEL_VERSION = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class UserKeys(NamedTuple):
    """The keys of one user.

    ``solar:{<user_id>}:log`` (the tail of the event log: a list of chunks of 20-byte
    records, oldest first, only those not yet durable or applied), ``:pos`` (a hash: ``seq``,
    ``durable``, ``len``, ``gen``, ``applied:<version>`` per model version with a state, and
    ``applied``, the highest of those), ``:dedup`` (the ring of the last W identity digests,
    ``service.store.dedup_ring``); ``state_prefix`` + version is the state blob of one model
    version (:meth:`state`).
    """

    log: str
    pos: str
    dedup: str
    state_prefix: str

    def state(self, version: str) -> str:
        """``solar:{<user_id>}:state:<version>``: the user's state under that model version."""
        return self.state_prefix + validate_model_version(version)


def validate_user_id(user_id: str) -> str:
    """Return ``user_id`` unchanged if it follows the user-id rule (``service.user_ids``).

    Raises:
        InvalidUserId: for anything else, including non-strings.
    """
    if not is_user_id(user_id):
        raise InvalidUserId(user_id)
    return user_id


def validate_model_version(version: str) -> str:
    """Return ``version`` unchanged if it is 1–64 characters of ``[A-Za-z0-9_.-]`` (what a
    checkpoint's content hash is made of).

    Raises:
        InvalidModelVersion: for anything else.
    """
    if not isinstance(version, str) or not _MODEL_VERSION.fullmatch(version):
        raise InvalidModelVersion(version)
    return version


def user_keys(user_id: str) -> UserKeys:
    """All keys of a user, validating the id once."""
    tag = f"{KEY_PREFIX}:{{{validate_user_id(user_id)}}}"
    return UserKeys(
        log=f"{tag}:log", pos=f"{tag}:pos", dedup=f"{tag}:dedup", state_prefix=f"{tag}:state:"
    )


def applied_field(version: str) -> str:
    """The field of a user's position hash holding what its ``version`` state covers."""
    return f"applied:{validate_model_version(version)}"


def state_key_pattern(version: str) -> str:
    """SCAN pattern of every user's state under ``version`` (``solar retire``)."""
    return f"{KEY_PREFIX}:{{*}}:state:{validate_model_version(version)}"


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
MODELS_KEY = f"{KEY_PREFIX}:models"  # hash: model version → JSON {path, seen_ms}


class BackfillKeys(NamedTuple):
    """The keys of one version's backfill, all in the slot ``{backfill:<version>}``.

    ``stream`` (work items: batches of user ids, consumer group ``backfill``) and ``meta`` (a
    hash: ``cursor``, the last user listed; ``listed``, 1 once every user is listed; ``total``,
    users listed; ``done``, users covered; ``events``, events folded in).
    """

    stream: str
    meta: str


def backfill_keys(version: str) -> BackfillKeys:
    """The keys of ``version``'s backfill."""
    tag = f"{KEY_PREFIX}:{{backfill:{validate_model_version(version)}}}"
    return BackfillKeys(stream=f"{tag}:work", meta=f"{tag}:meta")
