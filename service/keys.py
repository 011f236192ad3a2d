"""Redis key layout and user-id validation.

All keys of one user share the hash tag ``{<user_id>}`` so that Redis Cluster places them in
one slot and a Lua script may touch all of them atomically. Braces are therefore forbidden in
user ids: a ``}`` inside an id would end the hash tag early.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "KEY_PREFIX",
    "MAX_USER_ID_LENGTH",
    "USER_ID_PATTERN",
    "InvalidUserId",
    "UserKeys",
    "log_key",
    "state_key",
    "user_keys",
    "validate_user_id",
    "version_key",
]

KEY_PREFIX = "solar"
MAX_USER_ID_LENGTH = 128
USER_ID_PATTERN = r"[A-Za-z0-9_.:@-]{1,128}"
_USER_ID_RE = re.compile(USER_ID_PATTERN)


class InvalidUserId(ValueError):
    """A user id that is empty, longer than 128 characters or uses a forbidden character."""

    def __init__(self, user_id: object) -> None:
        super().__init__(
            f"invalid user_id {user_id!r}: expected 1-{MAX_USER_ID_LENGTH} characters "
            "of [A-Za-z0-9_.:@-]"
        )
        self.user_id = user_id


class UserKeys(NamedTuple):
    """The three keys of one user, in the order the store's Lua scripts expect them."""

    state: str
    log: str
    version: str


def validate_user_id(user_id: str) -> str:
    """Return ``user_id`` unchanged if it is 1-128 characters of ``[A-Za-z0-9_.:@-]``.

    Raises:
        InvalidUserId: for anything else, including non-strings.
    """
    if not isinstance(user_id, str) or _USER_ID_RE.fullmatch(user_id) is None:
        raise InvalidUserId(user_id)
    return user_id


def _key(user_id: str, suffix: str) -> str:
    return f"{KEY_PREFIX}:{{{validate_user_id(user_id)}}}:{suffix}"


def state_key(user_id: str) -> str:
    """Key of the user's LowRankState blob: ``solar:{<user_id>}:state``."""
    return _key(user_id, "state")


def log_key(user_id: str) -> str:
    """Key of the user's event log (concatenated 20-byte records): ``solar:{<user_id>}:log``."""
    return _key(user_id, "log")


def version_key(user_id: str) -> str:
    """Key of the user's compare-and-set counter (decimal integer): ``solar:{<user_id>}:ver``."""
    return _key(user_id, "ver")


def user_keys(user_id: str) -> UserKeys:
    """All three keys of a user, validating the id once."""
    tag = f"{KEY_PREFIX}:{{{validate_user_id(user_id)}}}"
    return UserKeys(state=f"{tag}:state", log=f"{tag}:log", version=f"{tag}:ver")
