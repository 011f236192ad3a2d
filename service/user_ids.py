"""The user-id rule (docs/DESIGN.md §5): 1-128 characters of ``[A-Za-z0-9_.:@-]``.

Its one home: the store's key builder (``service.store.keys``), the request schemas and the
``/users/{user_id}`` path (``service.api``), the fast ``/rank`` decoder and the domain error
(``service.errors.InvalidUserId``) all read it from here. No braces: every key of a user
carries the id inside a Redis hash tag ``{<user_id>}``, which a ``}`` would end early.

The rule is written once (the character class and the length) and rendered for each regex
engine that checks it, because their anchors differ: Python's ``$`` also matches before a
final newline, so Python-side patterns full-match or use ``\\Z``; pydantic's Rust engine has
no ``\\Z`` and its ``$`` is the end of the text.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_USER_ID_LENGTH",
    "USER_ID_CHARACTERS",
    "USER_ID_PATTERN",
    "USER_ID_PYTHON_REGEX",
    "USER_ID_REGEX",
    "USER_ID_RULE",
    "is_user_id",
]

MAX_USER_ID_LENGTH = 128
USER_ID_CHARACTERS = "A-Za-z0-9_.:@-"  # the body of a regex character class
USER_ID_RULE = f"1-{MAX_USER_ID_LENGTH} characters of [{USER_ID_CHARACTERS}]"

# Unanchored: for ``re.fullmatch``.
USER_ID_PATTERN = rf"[{USER_ID_CHARACTERS}]{{1,{MAX_USER_ID_LENGTH}}}"
# For pydantic (``Field``/``Path(pattern=...)``, which searches): anchored at both ends.
USER_ID_REGEX = rf"^{USER_ID_PATTERN}$"
# For validators that search with Python's ``re`` (msgspec): ``\Z``, not ``$``.
USER_ID_PYTHON_REGEX = rf"\A{USER_ID_PATTERN}\Z"

_USER_ID_RE = re.compile(USER_ID_PATTERN)


def is_user_id(value: object) -> bool:
    """Whether ``value`` is a string that follows the rule (non-strings never do)."""
    return isinstance(value, str) and _USER_ID_RE.fullmatch(value) is not None
