from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from service.keys import (
    USER_ID_PATTERN,
    InvalidUserId,
    log_key,
    state_key,
    user_keys,
    validate_user_id,
    version_key,
)


def _hash_tag(key: str) -> str:
    """The part of a key that Redis Cluster hashes: between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start + 1)]


def test_key_layout() -> None:
    assert state_key("u1") == "solar:{u1}:state"
    assert log_key("u1") == "solar:{u1}:log"
    assert version_key("u1") == "solar:{u1}:ver"


def test_user_keys_match_single_functions() -> None:
    keys = user_keys("alice@example.com")
    assert keys == (
        state_key("alice@example.com"),
        log_key("alice@example.com"),
        version_key("alice@example.com"),
    )
    assert keys.state.endswith(":state") and keys.version.endswith(":ver")


@pytest.mark.parametrize("user_id", ["a", "A-Z_0.9:x@y", "x" * 128, "123", "user:42"])
def test_keys_of_one_user_share_one_hash_tag(user_id: str) -> None:
    tags = {_hash_tag(k) for k in (state_key(user_id), log_key(user_id), version_key(user_id))}
    assert tags == {user_id}


def test_keys_of_different_users_differ() -> None:
    assert len({state_key("a"), state_key("b"), log_key("a"), version_key("a")}) == 4


@pytest.mark.parametrize("user_id", ["a", "Z9", "a.b-c_d:e@f", "x" * 128])
def test_valid_user_ids_pass_unchanged(user_id: str) -> None:
    assert validate_user_id(user_id) == user_id
    assert re.fullmatch(USER_ID_PATTERN, user_id)


@pytest.mark.parametrize(
    "user_id",
    ["", "x" * 129, "a{b", "a}b", "{a}", "a b", "a/b", "é", "a\n", "\na", "a\x00", "a*"],
)
def test_invalid_user_ids_are_rejected_with_the_value_in_the_message(user_id: str) -> None:
    with pytest.raises(InvalidUserId) as info:
        validate_user_id(user_id)
    assert repr(user_id) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert info.value.user_id == user_id


@pytest.mark.parametrize("user_id", [None, 42, b"abc"])
def test_non_strings_are_rejected(user_id: object) -> None:
    with pytest.raises(InvalidUserId):
        validate_user_id(user_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("make_key", [state_key, log_key, version_key, user_keys])
def test_key_functions_validate(make_key: Callable[[str], object]) -> None:
    with pytest.raises(InvalidUserId):
        make_key("bad}id")
