"""Redis key layout and user-id validation.

All keys of one user share the hash tag ``{<user_id>}`` so that Redis Cluster places them in
one slot and a Lua script may touch all of them atomically. Braces are therefore forbidden in
user ids: a ``}`` inside an id would end the hash tag early.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from service.errors import InvalidUserId

__all__ = ["KEY_PREFIX", "USER_ID_PATTERN", "UserKeys", "user_keys", "validate_user_id"]

KEY_PREFIX = "solar"
USER_ID_PATTERN = r"[A-Za-z0-9_.:@-]{1,128}"
_USER_ID_RE = re.compile(USER_ID_PATTERN)


class UserKeys(NamedTuple):
    """The three keys of one user, in the order the store's Lua scripts expect them:
    ``solar:{<user_id>}:state`` (the state blob), ``:log`` (20-byte event records) and
    ``:ver`` (the compare-and-set counter, a decimal integer)."""

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


def user_keys(user_id: str) -> UserKeys:
    """All three keys of a user, validating the id once."""
    tag = f"{KEY_PREFIX}:{{{validate_user_id(user_id)}}}"
    return UserKeys(state=f"{tag}:state", log=f"{tag}:log", version=f"{tag}:ver")
