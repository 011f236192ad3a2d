"""OpenAPI descriptions of the error answers shared by the routes."""

from __future__ import annotations

from typing import Any

from service.api.schemas import ErrorResponse

__all__ = ["errors"]

_DESCRIPTIONS = {
    401: "SOLAR_API_TOKEN is set and the bearer token is missing or wrong",
    404: "unknown user",
    409: "the stored state is unreadable (it is rebuilt on the next /ingest or /rank)",
    413: "body or list over its limit (SOLAR_MAX_CANDIDATES, SOLAR_MAX_EVENTS, body bytes)",
    415: "unsupported Content-Type",
    422: "malformed input; `errors` names the offending fields",
    503: "store unreachable, scoring queue full, shutting down, or wait=true timed out; "
    "see Retry-After",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the given status codes, all with ``ErrorResponse`` bodies."""
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in codes}
