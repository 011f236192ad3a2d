"""Python client of the solar HTTP API: :class:`SolarClient` (sync), :class:`AsyncSolarClient`.

    with SolarClient("http://127.0.0.1:8000", token=None) as solar:
        solar.ingest([{"user_id": "u1", "item_id": 50, "ts": 1718000000.0}])
        ranked = solar.rank("u1", [1, 50, 100, 181], top_k=3)  # RankResult
        print(ranked.item_ids, solar.user("u1").singular_values)

Typed answers (:mod:`solar_tools.results`); a non-2xx answer raises :class:`SolarHTTPError`
with the service's ``detail`` and field errors. 503s and failed connections are retried, a
bounded number of times, after ``Retry-After`` (capped; :class:`Retry`): every call is safe to
repeat (``/ingest`` drops re-sent events). ``ingest_many`` streams NDJSON, with a tqdm bar.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from solar_tools.protocol import (
    NDJSON,
    RETRIED_ERRORS,
    ClientBase,
    Event,
    IngestTally,
    Progress,
    Retry,
    async_ndjson_chunks,
    batches,
    decode,
    ndjson_chunks,
    rank_body,
)
from solar_tools.results import (
    BulkIngestResult,
    IngestResult,
    ItemId,
    ItemsPage,
    ModelInfo,
    RankResult,
    SolarError,
    SolarHTTPError,
    SolarUnavailable,
    UserInfo,
)

__all__ = [
    "AsyncSolarClient",
    "BulkIngestResult",
    "IngestResult",
    "ItemsPage",
    "ModelInfo",
    "RankResult",
    "Retry",
    "SolarClient",
    "SolarError",
    "SolarHTTPError",
    "SolarUnavailable",
    "UserInfo",
]

DEFAULT_URL = "http://127.0.0.1:8000"


class SolarClient(ClientBase):
    """Blocking client; one ``httpx.Client`` (keep-alive) per instance. Use as a context
    manager or call :meth:`close`. ``timeout_s`` bounds each request; ``http``: a caller's
    own ``httpx.Client`` (its base URL is used; the caller closes it)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        retry: Retry = Retry(),  # noqa: B008 - frozen, never mutated
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(str(http.base_url) if http is not None else base_url, token, retry)
        self._owned = http is None
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def __enter__(self) -> SolarClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def _call(
        self, method: str, path: str, ndjson: Sequence[Event] | None = None, **kwargs: Any
    ) -> Any:
        headers = {**self._auth, **({"Content-Type": NDJSON} if ndjson is not None else {})}
        for attempt in range(1, self.retry.attempts + 1):
            content = ndjson_chunks(ndjson) if ndjson is not None else None
            outcome: httpx.Response | Exception
            try:
                outcome = self._http.request(
                    method, path, headers=headers, content=content, **kwargs
                )
            except RETRIED_ERRORS as exc:
                outcome = exc
            wait_s = self._retry_in_s(attempt, outcome, f"{method} {path}")
            if wait_s is None:
                assert isinstance(outcome, httpx.Response)  # a failed last connection raised
                return decode(outcome)
            time.sleep(wait_s)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def rank(
        self,
        user_id: str,
        candidates: Sequence[ItemId],
        *,
        top_k: int | None = None,
        mode: str | None = None,
    ) -> RankResult:
        """Score ``candidates`` for the user in ``mode`` (None: the model's default mode)."""
        body = rank_body(user_id, candidates, top_k, mode)
        return RankResult.from_json(self._call("POST", "/rank", json=body))

    def ingest(self, events: Sequence[Event], *, wait: bool = False) -> IngestResult:
        """One ``POST /ingest`` (JSON body) of at most SOLAR_MAX_EVENTS events; ``wait``:
        answer once the events are applied (``?wait=true``, read-your-writes)."""
        path = "/ingest?wait=true" if wait else "/ingest"
        return IngestResult.from_json(self._call("POST", path, json={"events": events}))

    def ingest_ndjson(self, events: Sequence[Event]) -> IngestResult:
        """One ``POST /ingest`` streamed as NDJSON, one event per line."""
        return IngestResult.from_json(self._call("POST", "/ingest", ndjson=events))

    def ingest_many(
        self,
        events: Iterable[Event],
        *,
        batch_size: int = 1_000,
        progress: Progress = False,
        total: int | None = None,
    ) -> BulkIngestResult:
        """Stream ``events`` (any iterable, read lazily) as NDJSON requests of ``batch_size``
        events; ``progress``: True for a tqdm bar over ``total`` events, or a bar to update."""
        tally = IngestTally(progress, total)
        try:
            for batch in batches(events, batch_size):
                tally.add(self.ingest_ndjson(batch), len(batch))
        finally:
            result = tally.result()
        return result

    def user(self, user_id: str) -> UserInfo:
        """The user's stored factors; :class:`SolarHTTPError` 404 for an unknown user."""
        return UserInfo.from_json(self._call("GET", f"/users/{user_id}"))

    def delete_user(self, user_id: str) -> bool:
        """Forget the user; False when nothing was stored."""
        return bool(self._call("DELETE", f"/users/{user_id}")["deleted"])

    def model(self) -> ModelInfo:
        return ModelInfo.from_json(self._call("GET", "/model"))

    def items(self, offset: int = 0, limit: int = 1_000) -> ItemsPage:
        """One page of the vocabulary (``limit`` ≤ 10,000)."""
        params = {"offset": offset, "limit": limit}
        return ItemsPage.from_json(self._call("GET", "/model/items", params=params))

    def vocabulary(self, page_size: int = 10_000) -> list[ItemId]:
        """Every item id of the served model, page by page."""
        ids: list[ItemId] = []
        while True:
            page = self.items(len(ids), page_size)
            ids += page.items
            if page.last:
                return ids

    def wait_ready(self, timeout_s: float = 30.0, poll_s: float = 0.2) -> None:
        """Return once ``GET /readyz`` answers 200; :class:`SolarUnavailable` after
        ``timeout_s``."""
        deadline, last = time.monotonic() + timeout_s, self._not_ready(None)
        while time.monotonic() < deadline:
            try:
                last = self._not_ready(self._http.get("/readyz"))
            except httpx.TransportError as exc:
                last = self._not_ready(exc)
            if last is None:
                return
            time.sleep(poll_s)
        raise SolarUnavailable(503, f"{self.base_url} not ready after {timeout_s} s ({last})")


class AsyncSolarClient(ClientBase):
    """The same API for asyncio; ``ingest_many`` keeps ``concurrency`` requests in flight.
    ``http``: a caller's own ``httpx.AsyncClient`` (e.g. over an ASGI transport)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        retry: Retry = Retry(),  # noqa: B008 - frozen, never mutated
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(str(http.base_url) if http is not None else base_url, token, retry)
        self._owned = http is None
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s)

    async def __aenter__(self) -> AsyncSolarClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def _call(
        self, method: str, path: str, ndjson: Sequence[Event] | None = None, **kwargs: Any
    ) -> Any:
        headers = {**self._auth, **({"Content-Type": NDJSON} if ndjson is not None else {})}
        for attempt in range(1, self.retry.attempts + 1):
            content = async_ndjson_chunks(ndjson) if ndjson is not None else None
            outcome: httpx.Response | Exception
            try:
                outcome = await self._http.request(
                    method, path, headers=headers, content=content, **kwargs
                )
            except RETRIED_ERRORS as exc:
                outcome = exc
            wait_s = self._retry_in_s(attempt, outcome, f"{method} {path}")
            if wait_s is None:
                assert isinstance(outcome, httpx.Response)  # a failed last connection raised
                return decode(outcome)
            await asyncio.sleep(wait_s)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def rank(
        self,
        user_id: str,
        candidates: Sequence[ItemId],
        *,
        top_k: int | None = None,
        mode: str | None = None,
    ) -> RankResult:
        body = rank_body(user_id, candidates, top_k, mode)
        return RankResult.from_json(await self._call("POST", "/rank", json=body))

    async def ingest(self, events: Sequence[Event], *, wait: bool = False) -> IngestResult:
        body = {"events": events}
        path = "/ingest?wait=true" if wait else "/ingest"
        return IngestResult.from_json(await self._call("POST", path, json=body))

    async def ingest_ndjson(self, events: Sequence[Event]) -> IngestResult:
        return IngestResult.from_json(await self._call("POST", "/ingest", ndjson=events))

    async def ingest_many(
        self,
        events: Iterable[Event],
        *,
        batch_size: int = 1_000,
        concurrency: int = 2,
        progress: Progress = False,
        total: int | None = None,
    ) -> BulkIngestResult:
        """As :meth:`SolarClient.ingest_many`, ``concurrency`` batches in flight. Batches of
        one user may then be applied out of order; the service's factors do not mind."""
        tally, pending = IngestTally(progress, total), batches(events, batch_size)

        async def worker() -> None:
            for batch in pending:  # one shared iterator: each batch goes to one worker
                tally.add(await self.ingest_ndjson(batch), len(batch))

        workers = [asyncio.ensure_future(worker()) for _ in range(max(1, concurrency))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:  # one batch failed: stop the others' requests, here and now
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            result = tally.result()
        return result

    async def user(self, user_id: str) -> UserInfo:
        return UserInfo.from_json(await self._call("GET", f"/users/{user_id}"))

    async def delete_user(self, user_id: str) -> bool:
        return bool((await self._call("DELETE", f"/users/{user_id}"))["deleted"])

    async def model(self) -> ModelInfo:
        return ModelInfo.from_json(await self._call("GET", "/model"))

    async def items(self, offset: int = 0, limit: int = 1_000) -> ItemsPage:
        params = {"offset": offset, "limit": limit}
        return ItemsPage.from_json(await self._call("GET", "/model/items", params=params))

    async def vocabulary(self, page_size: int = 10_000) -> list[ItemId]:
        ids: list[ItemId] = []
        while True:
            page = await self.items(len(ids), page_size)
            ids += page.items
            if page.last:
                return ids

    async def wait_ready(self, timeout_s: float = 30.0, poll_s: float = 0.2) -> None:
        loop = asyncio.get_running_loop()
        deadline, last = loop.time() + timeout_s, self._not_ready(None)
        while loop.time() < deadline:
            try:
                last = self._not_ready(await self._http.get("/readyz"))
            except httpx.TransportError as exc:
                last = self._not_ready(exc)
            if last is None:
                return
            await asyncio.sleep(poll_s)
        raise SolarUnavailable(503, f"{self.base_url} not ready after {timeout_s} s ({last})")
