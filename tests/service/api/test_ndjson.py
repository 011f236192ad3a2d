"""NDJSON event bodies: lines across chunk boundaries, blank lines, errors naming the line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import pytest

from service.api.ndjson import parse_ndjson_events
from service.errors import InvalidInput, PayloadTooLarge

pytestmark = pytest.mark.anyio


async def _chunks(parts: Sequence[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _line(i: int) -> bytes:
    return json.dumps({"user_id": "u", "item_id": i, "ts": float(i)}).encode()


async def test_lines_split_across_chunks_and_blank_lines() -> None:
    text = b"\n".join([_line(1), b"", b"  ", _line(2), _line(3)])  # no trailing newline
    parts = [text[i : i + 7] for i in range(0, len(text), 7)]
    events = await parse_ndjson_events(_chunks(parts), max_events=10)
    assert [e.item_id for e in events] == [1, 2, 3]


async def test_a_bad_line_is_named_with_its_field() -> None:
    text = b"\n".join([_line(1), b'{"user_id": "u", "item_id": 2, "ts": "soon"}'])
    with pytest.raises(InvalidInput) as info:
        await parse_ndjson_events(_chunks([text]), max_events=10)
    assert info.value.field == "line 2.ts"
    with pytest.raises(InvalidInput) as info:
        await parse_ndjson_events(_chunks([_line(1) + b"\nnot json\n"]), max_events=10)
    assert info.value.field.startswith("line 2")


async def test_too_many_events_and_no_events() -> None:
    text = b"\n".join(_line(i) for i in range(1, 5)) + b"\n"
    with pytest.raises(PayloadTooLarge):
        await parse_ndjson_events(_chunks([text]), max_events=3)
    assert len(await parse_ndjson_events(_chunks([text]), max_events=4)) == 4
    with pytest.raises(InvalidInput, match="no events"):
        await parse_ndjson_events(_chunks([b"\n \n"]), max_events=3)
