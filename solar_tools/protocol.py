"""The wire side of the solar client: the retry policy, request bodies, NDJSON encoding and
answer decoding, shared by the sync and the async client (``solar_tools.client``)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeAlias

import httpx
from tqdm import tqdm

from solar_tools.results import (
    BulkIngestResult,
    IngestResult,
    ItemId,
    SolarError,
    SolarHTTPError,
    SolarUnavailable,
)

__all__ = [
    "NDJSON",
    "ClientBase",
    "RETRIED_ERRORS",
    "Event",
    "IngestTally",
    "Progress",
    "Retry",
    "async_ndjson_chunks",
    "batches",
    "decode",
    "ndjson_chunks",
    "rank_body",
    "retry_after_s",
]

NDJSON = "application/x-ndjson"
Event: TypeAlias = Mapping[str, Any]
Progress: TypeAlias = "bool | tqdm[Any]"
# Failures after which a request surely or harmlessly did not take effect: retried.
RETRIED_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
LINES_PER_CHUNK = 256  # NDJSON lines per streamed chunk


def retry_after_s(header: str | None, default_s: float) -> float:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date);
    ``default_s`` when it is absent or unreadable."""
    if not header:
        return default_s
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return default_s
    when = when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


@dataclass(frozen=True)
class Retry:
    """How 503 answers and failed connections are retried.

    Attributes:
        attempts: requests in all, the first included (1: never retry).
        max_wait_s: the longest wait honoured (a larger ``Retry-After`` is cut to it).
        default_wait_s: wait after a failed connection or a 503 without ``Retry-After``.
    """

    attempts: int = 6
    max_wait_s: float = 10.0
    default_wait_s: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.max_wait_s < 0 or self.default_wait_s < 0:
            raise ValueError(f"attempts must be ≥ 1 and waits ≥ 0: {self}")

    def wait_s(self, response: httpx.Response | None) -> float:
        """The wait before the next attempt after ``response`` (None: a failed connection)."""
        header = response.headers.get("Retry-After") if response is not None else None
        return min(self.max_wait_s, retry_after_s(header, self.default_wait_s))


def decode(response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer; else raise the :class:`SolarHTTPError` it stands for
    (:class:`SolarUnavailable` for a 503)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and body is not None:
        return body
    if response.is_success:
        raise SolarError(f"{response.request.url}: answer is not JSON: {response.text[:200]}")
    detail = body.get("detail") if isinstance(body, dict) else None
    errors = body.get("errors") if isinstance(body, dict) else None
    kind = SolarUnavailable if response.status_code == 503 else SolarHTTPError
    raise kind(response.status_code, str(detail or response.text[:300]), errors)


def rank_body(
    user_id: str, candidates: Sequence[ItemId], top_k: int | None, mode: str | None
) -> dict[str, Any]:
    """The ``POST /rank`` JSON body (``top_k`` and ``mode`` only when given)."""
    body: dict[str, Any] = {"user_id": user_id, "candidates": list(candidates)}
    if top_k is not None:
        body["top_k"] = top_k
    if mode is not None:
        body["mode"] = mode
    return body


def ndjson_chunks(events: Sequence[Event]) -> Iterator[bytes]:
    """The events as NDJSON, ``LINES_PER_CHUNK`` lines per chunk, encoded as they are sent."""
    for start in range(0, len(events), LINES_PER_CHUNK):
        chunk = events[start : start + LINES_PER_CHUNK]
        yield "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in chunk).encode()


async def async_ndjson_chunks(events: Sequence[Event]) -> AsyncIterator[bytes]:
    """:func:`ndjson_chunks` for ``httpx.AsyncClient`` (which streams async iterables)."""
    for chunk in ndjson_chunks(events):
        yield chunk


def batches(events: Iterable[Event], size: int) -> Iterator[list[Event]]:
    """Consecutive lists of at most ``size`` events, read lazily from ``events``."""
    if size < 1:
        raise ValueError(f"batch size must be ≥ 1, got {size}")
    batch: list[Event] = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class IngestTally:
    """Totals of a bulk ingest as its answers come in, and its progress bar.

    ``progress``: True for a new tqdm bar over ``total`` events (closed by :meth:`result`),
    or a bar of the caller's to update; False for none.
    """

    def __init__(self, progress: Progress, total: int | None) -> None:
        self._owned = progress is True
        self.bar: tqdm[Any] | None = (
            tqdm(total=total, unit="ev", smoothing=0.1)
            if progress is True
            else progress
            if isinstance(progress, tqdm)
            else None
        )
        self.started = time.perf_counter()
        self.accepted = self.duplicates = self.batches = 0

    def add(self, answer: IngestResult, events: int) -> None:
        self.accepted += answer.accepted
        self.duplicates += answer.duplicates
        self.batches += 1
        if self.bar is not None:
            self.bar.update(events)

    def result(self) -> BulkIngestResult:
        if self._owned and self.bar is not None:
            self.bar.close()
        seconds = time.perf_counter() - self.started
        return BulkIngestResult(self.accepted, self.duplicates, self.batches, seconds)


class ClientBase:
    """What both clients share: the base URL, the bearer token, the retry policy."""

    def __init__(self, base_url: str, token: str | None, retry: Retry) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}

    def _retry_in_s(
        self, attempt: int, outcome: httpx.Response | Exception, what: str
    ) -> float | None:
        """Seconds to wait before retrying; None when ``outcome`` is the answer to decode. A
        failed connection on the last attempt raises :class:`SolarError`."""
        final = attempt >= self.retry.attempts
        if isinstance(outcome, Exception):
            if final:
                raise SolarError(f"{what} at {self.base_url}: {outcome!r}") from outcome
            return self.retry.default_wait_s
        return self.retry.wait_s(outcome) if outcome.status_code == 503 and not final else None

    def _not_ready(self, outcome: httpx.Response | Exception | None) -> str | None:
        """Why a ``GET /readyz`` outcome (None: not asked yet) is not "ready"; None if it is."""
        if outcome is None:
            return "no answer yet"
        if isinstance(outcome, Exception):
            return repr(outcome)
        return None if outcome.status_code == 200 else f"HTTP {outcome.status_code}"
