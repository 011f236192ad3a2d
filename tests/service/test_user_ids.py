"""The user-id rule, in its one home: every rendering of it (Python, pydantic, msgspec) and
every place that checks it (the key builder, /rank, /ingest in JSON and NDJSON, the /users
path) accepts and refuses the same ids, and a refusal is a 422 naming the field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from pydantic import TypeAdapter, ValidationError

from service.api.schemas import UserId
from service.errors import InvalidUserId
from service.store.keys import user_keys, validate_user_id
from service.user_ids import (
    MAX_USER_ID_LENGTH,
    USER_ID_PATTERN,
    USER_ID_PYTHON_REGEX,
    USER_ID_REGEX,
    USER_ID_RULE,
    is_user_id,
)
from tests.service.conftest import SettingsFactory
from tests.service.support import event, running_app

GOOD = ["a", "Z9", "a.b-c_d:e@f", "alice@example.com", "user:42", "x" * MAX_USER_ID_LENGTH]
# Ids that a URL path can carry too (no "" and no "/", which never reach the route).
BAD_IN_PATHS = ["x" * 129, "a{b}", "a}", "{a", "a b", "é", "a\n", "a\x00", "a*", "a#b"]
BAD = ["", "\na", "a/b", *BAD_IN_PATHS]

_PYDANTIC = TypeAdapter(UserId)
_MSGSPEC = Annotated[str, msgspec.Meta(pattern=USER_ID_PYTHON_REGEX)]


def _pydantic_accepts(user_id: str) -> bool:
    try:
        _PYDANTIC.validate_python(user_id)
    except ValidationError:
        return False
    return True


def _msgspec_accepts(user_id: str) -> bool:
    try:
        msgspec.json.decode(json.dumps(user_id), type=_MSGSPEC)
    except msgspec.ValidationError:
        return False
    return True


def _renderings(user_id: str) -> dict[str, bool]:
    return {
        "is_user_id": is_user_id(user_id),
        "fullmatch": re.fullmatch(USER_ID_PATTERN, user_id) is not None,
        "python search": re.search(USER_ID_PYTHON_REGEX, user_id) is not None,
        "pydantic": _pydantic_accepts(user_id),
        "msgspec": _msgspec_accepts(user_id),
    }


def test_the_rule_reads_as_documented() -> None:
    assert USER_ID_RULE == "1-128 characters of [A-Za-z0-9_.:@-]"
    assert USER_ID_REGEX == "^[A-Za-z0-9_.:@-]{1,128}$"


def test_the_rule_is_written_only_in_its_home() -> None:
    """No module spells the character class out again (it was written five times)."""
    root = Path(__file__).resolve().parents[2]
    home = root / "service" / "user_ids.py"
    copies = [
        str(path.relative_to(root))
        for package in ("service", "model", "solar_tools")
        for path in (root / package).rglob("*.py")
        if path != home and "A-Za-z0-9_.:@" in path.read_text(encoding="utf-8")
    ]
    assert not copies, copies


@pytest.mark.parametrize("user_id", GOOD)
def test_every_rendering_accepts_a_good_id(user_id: str) -> None:
    assert all(_renderings(user_id).values()), _renderings(user_id)
    assert validate_user_id(user_id) == user_id
    assert user_keys(user_id).state("v1") == f"solar:{{{user_id}}}:state:v1"


@pytest.mark.parametrize("user_id", BAD)
def test_every_rendering_refuses_a_bad_id(user_id: str) -> None:
    assert not any(_renderings(user_id).values()), _renderings(user_id)
    with pytest.raises(InvalidUserId, match=re.escape(USER_ID_RULE)) as info:
        user_keys(user_id)
    assert info.value.field == "user_id" and info.value.status_code == 422


@pytest.mark.parametrize("value", [None, 42, b"abc", ["a"]])
def test_non_strings_are_not_user_ids(value: object) -> None:
    assert not is_user_id(value)
    with pytest.raises(InvalidUserId):
        validate_user_id(value)  # type: ignore[arg-type]


def _rank(client: httpx.AsyncClient, user_id: str) -> Any:
    return client.post("/rank", json={"user_id": user_id, "candidates": [1, 2]})


def _ingest(client: httpx.AsyncClient, user_id: str) -> Any:
    return client.post("/ingest", json={"events": [event(user_id, 1, 100.0)]})


def _ingest_ndjson(client: httpx.AsyncClient, user_id: str) -> Any:
    return client.post(
        "/ingest",
        content=json.dumps(event(user_id, 1, 100.0)),
        headers={"content-type": "application/x-ndjson"},
    )


def _get(client: httpx.AsyncClient, user_id: str) -> Any:
    return client.get(f"/users/{quote(user_id, safe='')}")


def _delete(client: httpx.AsyncClient, user_id: str) -> Any:
    return client.delete(f"/users/{quote(user_id, safe='')}")


# (route, how to call it with a user id, the field its 422 names, ids it can carry)
ROUTES = [
    ("POST /rank", _rank, "body.user_id", BAD),
    ("POST /ingest", _ingest, "body.events.0.user_id", BAD),
    ("POST /ingest ndjson", _ingest_ndjson, "line 1.user_id", BAD),
    ("GET /users", _get, "path.user_id", BAD_IN_PATHS),
    ("DELETE /users", _delete, "path.user_id", BAD_IN_PATHS),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("call", "field", "bad"), [route[1:] for route in ROUTES], ids=[route[0] for route in ROUTES]
)
async def test_every_route_refuses_the_same_bad_ids_with_a_422_naming_the_field(
    make_settings: SettingsFactory, call: Any, field: str, bad: list[str]
) -> None:
    async with running_app(make_settings()) as (_, client):
        for user_id in bad:
            response = await call(client, user_id)
            assert response.status_code == 422, (user_id, response.text)
            fields = {e["field"] for e in response.json()["errors"]}
            assert field in fields, (user_id, fields)
        for user_id in GOOD:
            response = await call(client, user_id)
            assert response.status_code in (200, 404), (user_id, response.text)
