from __future__ import annotations

import re

import pytest

from service.errors import InvalidModelVersion, InvalidUserId
from service.store.keys import (
    applied_field,
    backfill_keys,
    lease_key,
    partition_of,
    state_key_pattern,
    stream_key,
    user_keys,
    validate_model_version,
    validate_user_id,
)
from service.user_ids import USER_ID_PATTERN


def _hash_tag(key: str) -> str:
    """The part of a key that Redis Cluster hashes: between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start + 1)]


def test_key_layout() -> None:
    keys = user_keys("alice@example.com")
    assert keys == (
        "solar:{alice@example.com}:log",
        "solar:{alice@example.com}:pos",
        "solar:{alice@example.com}:dedup",
        "solar:{alice@example.com}:state:",
    )
    assert keys.state("3f2a9c") == "solar:{alice@example.com}:state:3f2a9c"
    assert state_key_pattern("3f2a9c") == "solar:{*}:state:3f2a9c"
    assert applied_field("3f2a9c") == "applied:3f2a9c"


@pytest.mark.parametrize("user_id", ["a", "A-Z_0.9:x@y", "x" * 128, "123", "user:42"])
def test_keys_of_one_user_share_one_hash_tag(user_id: str) -> None:
    keys = user_keys(user_id)
    tags = {_hash_tag(k) for k in (*keys, keys.state("v1"), keys.state("v2"))}
    assert tags == {user_id}


def test_keys_of_different_users_differ() -> None:
    assert len(set(user_keys("a")) | set(user_keys("b"))) == 8


def test_partition_keys_carry_their_own_hash_tag() -> None:
    assert stream_key(3) == "solar:ingest:{p3}"
    assert lease_key(3) == "solar:ingest:{p3}:lease"
    assert _hash_tag(stream_key(3)) == _hash_tag(lease_key(3)) == "p3"
    assert {partition_of(f"u{i}", 16) for i in range(100)} == set(range(16))
    assert partition_of("alice", 16) == partition_of("alice", 16) < 16


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


def test_user_keys_validate() -> None:
    with pytest.raises(InvalidUserId):
        user_keys("bad}id")


@pytest.mark.parametrize("version", ["", "a" * 65, "a:b", "a{b}", "a*", "a b", "é"])
def test_model_versions_that_would_break_a_key_are_refused(version: str) -> None:
    with pytest.raises(InvalidModelVersion):
        validate_model_version(version)
    with pytest.raises(InvalidModelVersion):
        user_keys("u").state(version)


def test_backfill_keys_share_their_own_hash_tag() -> None:
    keys = backfill_keys("3f2a9c")
    assert {_hash_tag(k) for k in keys} == {"backfill:3f2a9c"}
