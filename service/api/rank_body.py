"""POST /rank bodies in and out, without a Python object per candidate where it can be helped.

In: a valid JSON body (the common case) is decoded and validated in one C pass by msgspec,
with its candidates left as raw bytes that ``service.core.raw_ids`` scans and later maps to
rows in compiled code (no Python object per candidate). Where that scan declines an element
(a float, an escaped or non-ASCII string, ...), msgspec decodes the candidates into plain
values, already known to be ints or 1-256 character strings. msgspec's schemas below are at
least as strict as ``schemas.RankRequest``; anything they refuse
(an error, but also what only pydantic accepts: ``1.0`` as an id, a UTF-16 body, a NaN)
takes the slow path, which is exactly what FastAPI does for a ``RankRequest`` body
(``json.loads``, then pydantic), so every 422 names the same fields with the same messages
as before.

Out: the response is one ``orjson.dumps`` of plain values; only the k returned items become
small dicts (k = top_k, 100 in the benchmarks, not M).
"""

from __future__ import annotations

import email.message
import json
from typing import Annotated, Any, NamedTuple

import msgspec
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

from service.api.schemas import MAX_TOP_K, Mode, RankRequest
from service.core.items import MAX_ITEM_ID_LENGTH
from service.core.ranking import RankOutcome
from service.core.raw_ids import RawCandidates, scan_candidates
from service.user_ids import USER_ID_PYTHON_REGEX

__all__ = ["RankQuery", "decode_rank_body", "encode_rank_response"]


class _RankFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The fields of a /rank body but its candidates (msgspec's errors are never shown: a
    refused body takes the slow path, so field order does not matter)."""

    user_id: Annotated[str, msgspec.Meta(pattern=USER_ID_PYTHON_REGEX)]
    top_k: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOP_K)] | None = None
    mode: Mode | None = None


class _FastRank(_RankFields, kw_only=True):
    candidates: Annotated[
        list[int | Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ITEM_ID_LENGTH)]],
        msgspec.Meta(min_length=1),
    ]


class _RawRank(_RankFields, kw_only=True):
    """The candidates' JSON text kept as it is (``service.core.raw_ids`` scans it)."""

    candidates: msgspec.Raw


_RAW_DECODER = msgspec.json.Decoder(_RawRank)
_DECODER = msgspec.json.Decoder(_FastRank)
_SLOW = TypeAdapter(RankRequest)


class RankQuery(NamedTuple):
    """A valid /rank body as plain values; ``checked``: every candidate is an int or a
    1-256 character string already (the fast paths), else ``service.core.items`` checks.
    ``candidates`` are :class:`RawCandidates` where the raw scan took them all."""

    user_id: str
    candidates: list[Any] | RawCandidates
    top_k: int | None
    mode: Mode | None  # None: the model's default (its trained mode)
    checked: bool


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule: application/json or application/*+json, parameters ignored."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def decode_rank_body(body: bytes, content_type: str | None) -> RankQuery:
    """The /rank body ``body`` (sent with ``content_type``) as a :class:`RankQuery`.

    Raises:
        RequestValidationError: what FastAPI raises for a ``RankRequest`` body (422).
        HTTPException: 400 for a body that is not text (the error handler answers 422).
    """
    if _is_json(content_type):
        # The raw scan declines escapes and non-ASCII ids: such bodies skip it (two C scans
        # of the bytes, ~2 µs for 2,048 ids) rather than pay for two decodes.
        if body.isascii() and b"\\" not in body:
            try:
                raw = _RAW_DECODER.decode(body)
            except (msgspec.ValidationError, msgspec.DecodeError):
                pass
            else:
                scanned = scan_candidates(raw.candidates)
                if scanned is not None:
                    return RankQuery(raw.user_id, scanned, raw.top_k, raw.mode, True)
        try:
            fast = _DECODER.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        else:
            return RankQuery(fast.user_id, fast.candidates, fast.top_k, fast.mode, True)
    slow = _validated(_parsed(body, content_type))
    return RankQuery(slow.user_id, slow.candidates, slow.top_k, slow.mode, False)


def _parsed(body: bytes, content_type: str | None) -> Any:
    """FastAPI's body reading: JSON for a JSON content type, else the bytes themselves."""
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    if not _is_json(content_type):
        return body
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from exc
    except ValueError as exc:  # not UTF-8/16/32 text
        raise HTTPException(400, "There was an error parsing the body") from exc


def _validated(value: Any) -> RankRequest:
    try:
        return _SLOW.validate_python(value, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc


def encode_rank_response(query: RankQuery, outcome: RankOutcome) -> bytes:
    """The ``schemas.RankResponse`` JSON of ``outcome`` (items best first)."""
    items = [{"item_id": item, "score": s} for item, s in outcome.items]
    document: dict[str, Any] = {
        "user_id": query.user_id,
        "model_version": outcome.model_version,
        "mode": outcome.mode,
        "history_length": outcome.history_length,
        "items": items,
        "unknown_items": outcome.unknown_items,
    }
    try:
        return orjson.dumps(document)
    except (orjson.JSONEncodeError, TypeError):
        # An id orjson refuses (a lone surrogate "\ud800", an int past 64 bits): echo it back
        # escaped, as sent, rather than fail the request.
        return json.dumps(document, separators=(",", ":")).encode()
