"""The client's wire helpers: Retry-After parsing, the retry policy, NDJSON, batching, the
decoding of answers and the bulk-ingest tally."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
from tqdm import tqdm

from solar_tools.protocol import (
    IngestTally,
    Retry,
    batches,
    decode,
    ndjson_chunks,
    rank_body,
    retry_after_s,
)
from solar_tools.results import IngestResult, SolarError, SolarHTTPError, SolarUnavailable


def test_retry_after_forms() -> None:
    assert retry_after_s("2", 9.0) == 2.0 and retry_after_s("0.5", 9.0) == 0.5
    assert retry_after_s(None, 9.0) == 9.0 and retry_after_s("", 9.0) == 9.0
    assert retry_after_s("soon", 9.0) == 9.0 and retry_after_s("-3", 9.0) == 0.0
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25.0 < retry_after_s(later, 9.0) <= 30.0
    earlier = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=30), usegmt=True)
    assert retry_after_s(earlier, 9.0) == 0.0


def test_retry_policy_caps_and_validates() -> None:
    retry = Retry(attempts=3, max_wait_s=4.0, default_wait_s=1.5)
    assert retry.wait_s(httpx.Response(503, headers={"Retry-After": "60"})) == 4.0
    assert retry.wait_s(httpx.Response(503, headers={"Retry-After": "2"})) == 2.0
    assert retry.wait_s(httpx.Response(503)) == 1.5 and retry.wait_s(None) == 1.5
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)


def test_ndjson_chunks_round_trip() -> None:
    events = [{"user_id": "u", "item_id": i, "ts": float(i)} for i in range(600)]
    chunks = list(ndjson_chunks(events))
    assert len(chunks) == 3  # 256 lines per chunk
    lines = b"".join(chunks).decode().splitlines()
    assert [json.loads(line) for line in lines] == events


def test_batches_are_lazy_and_sized() -> None:
    pulled: list[int] = []

    def source() -> Iterator[dict[str, int]]:
        for i in range(7):
            pulled.append(i)
            yield {"i": i}

    stream = batches(source(), 3)
    assert [e["i"] for e in next(stream)] == [0, 1, 2] and pulled == [0, 1, 2]
    assert [len(b) for b in stream] == [3, 1]
    with pytest.raises(ValueError, match="batch size"):
        next(batches([], 0))


def _response(status: int, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "http://x/y"), **kwargs)  # type: ignore[arg-type]


def test_decode_answers_and_errors() -> None:
    assert decode(_response(200, json={"a": 1})) == {"a": 1}
    errors = [{"field": "body.top_k", "message": "too big", "type": "less_than_equal"}]
    with pytest.raises(SolarHTTPError) as invalid:
        decode(_response(422, json={"detail": "invalid request: body.top_k", "errors": errors}))
    assert invalid.value.status == 422 and invalid.value.errors == errors
    assert str(invalid.value) == "HTTP 422: invalid request: body.top_k (body.top_k)"
    with pytest.raises(SolarUnavailable):
        decode(_response(503, json={"detail": "store unavailable"}))
    with pytest.raises(SolarHTTPError, match="HTTP 502: Bad Gateway"):
        decode(_response(502, text="Bad Gateway"))
    with pytest.raises(SolarError, match="not JSON"):
        decode(_response(200, text="<html>"))


def test_rank_body_leaves_out_what_is_not_given() -> None:
    assert rank_body("u", (1, "a"), None, None) == {"user_id": "u", "candidates": [1, "a"]}
    assert rank_body("u", [1], 5, "softmax")["top_k"] == 5


def test_tally_counts_and_closes_only_its_own_bar() -> None:
    own = IngestTally(True, total=10)
    assert own.bar is not None
    own.add(IngestResult(3, 1, 1), 4)
    result = own.result()
    assert (result.accepted, result.duplicates, result.batches, result.events) == (3, 1, 1, 4)
    assert own.bar.n == 4 and own.bar.disable  # tqdm disables a bar when it is closed
    with tqdm(total=10, file=io.StringIO()) as bar:
        IngestTally(bar, None).result()
        assert not bar.disable  # the caller's bar stays open
    assert IngestTally(False, None).bar is None
