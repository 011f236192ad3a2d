"""The stages of a `svd` POST /rank, each callable alone through the service's own code, for
``bench/stages.py``.

A stage here calls exactly what the route and the use case call for it, in the same order,
so that the sum of the stages is the request minus the HTTP server and framework overhead
(which the HTTP measurement of ``bench/stages.py`` shows).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.routing import APIRoute, serialize_response

from bench.roofline import median_s
from model.ranker import ScoreRequest
from service.api.routes.rank import router as rank_router
from service.api.schemas import RankedItem, RankResponse
from service.core.items import candidate_rows
from service.core.serving_model import ServingModel, load_serving_model
from service.core.users import batch_state, parse_state
from service.scoring.batcher import MicroBatcher
from service.scoring.scorer import SVD_PASS_ROWS, RankJob, split_jobs
from service.settings import Settings
from service.store.base import Store
from service.store.factory import open_store

__all__ = ["STAGES", "RankPath"]

STAGES = (
    "decode",
    "validate",
    "ids → rows",
    "store GET",
    "state + interests",
    "queue wait",
    "pass",
    "top-k",
    "encode",
)
TOP_K = 100
HISTORY = 1_000  # events per seeded user (svd cost does not depend on it)


async def _amedian_s(fn: Callable[[], Awaitable[object]], budget_s: float) -> float:
    await fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 500):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class RankPath:
    """A loaded model, a store holding ``users`` seeded states, and the /rank route."""

    model: ServingModel
    store: Store
    users: list[str]
    route: APIRoute
    blobs: list[bytes]  # the users' stored states, as GET returns them
    pass_rows: int = SVD_PASS_ROWS

    @classmethod
    async def open(cls, model_dir: Path, redis_url: str, users: int) -> RankPath:
        settings = Settings(model_path=model_dir, redis_url=redis_url, device="cpu")
        model = load_serving_model(settings)
        store = await open_store(settings)
        rng = np.random.default_rng(0)
        names = [f"s{u}" for u in range(users)]
        for name in names:
            rows = rng.normal(0.0, 0.1, size=(HISTORY, model.dim))  # (N, d)
            state = batch_state(rows, 1.7e9 + np.arange(HISTORY, dtype=np.float64), model)
            await store.replace(name, 0, state.to_bytes(), b"")
        route = next(r for r in rank_router.routes if isinstance(r, APIRoute))
        blobs = [await store.get_state(name) for name in names]
        return cls(model, store, names, route, [b for b in blobs if b is not None])

    async def close(self) -> None:
        await self.store.close()

    # ----------------------------------------------------------------- inputs
    def body(self, m: int, user: int = 0) -> bytes:
        """A /rank body as the load generators send it: M distinct ids (strings)."""
        items = list(self.model.checkpoint.vocab.items)
        candidates = random.Random(m + user).sample(items, m)
        payload = {"user_id": self.users[user], "candidates": candidates, "top_k": TOP_K}
        return json.dumps(payload).encode()

    def _parsed(self, m: int, user: int = 0) -> Any:
        value, errors = self.route.body_field.validate(  # type: ignore[union-attr]
            json.loads(self.body(m, user)), {}, loc=("body",)
        )
        assert not errors, errors
        return value

    def _request(self, m: int, user: int) -> ScoreRequest:
        parsed = self._parsed(m, user)
        _, rows, _ = candidate_rows(parsed.candidates, self.model.item_index)
        loaded = parse_state(self.blobs[user], self.model).state
        assert loaded is not None
        interests = torch.from_numpy(loaded.interests(self.model.rank)).float()
        return ScoreRequest(torch.tensor(rows, dtype=torch.long), interests=interests)

    # ----------------------------------------------------------------- stages
    async def request_stages(self, m: int, budget_s: float) -> dict[str, float]:
        """Per-request stages (ms) that do not depend on the batch size."""
        body = self.body(m)
        obj = json.loads(body)
        parsed = self._parsed(m)
        field = self.route.body_field
        assert field is not None
        blob = self.blobs[0]
        index, rank = self.model.item_index, self.model.rank

        def ids() -> object:
            _, rows, _ = candidate_rows(parsed.candidates, index)
            return torch.tensor(rows, dtype=torch.long)

        def state() -> object:
            loaded = parse_state(blob, self.model).state
            assert loaded is not None
            return torch.from_numpy(loaded.interests(rank)).float()

        logits = torch.randn(m)

        def top_k() -> object:
            values, positions = torch.topk(logits.float(), min(TOP_K, m))
            return positions.tolist(), values.tolist()

        positions, values = top_k()  # type: ignore[misc]
        found, _, unknown = candidate_rows(parsed.candidates, index)

        async def encode() -> object:
            pairs = zip(positions, values, strict=True)
            response = RankResponse(
                user_id=parsed.user_id,
                model_version=self.model.version,
                mode=parsed.mode,
                history_length=HISTORY,
                items=[RankedItem(item_id=found[i], score=s) for i, s in pairs],
                unknown_items=unknown,
            )
            return await serialize_response(
                field=self.route.response_field, response_content=response, dump_json=True
            )

        seconds = {
            "decode": median_s(lambda: json.loads(body), budget_s),
            "validate": median_s(lambda: field.validate(obj, {}, loc=("body",)), budget_s),
            "ids → rows": median_s(ids, budget_s),
            "store GET": await _amedian_s(lambda: self.store.get_state(self.users[0]), budget_s),
            "state + interests": median_s(state, budget_s),
            "top-k": median_s(top_k, budget_s),
            "encode": await _amedian_s(encode, budget_s),
        }
        return {k: 1e3 * v for k, v in seconds.items()}

    async def batch_stages(self, m: int, b: int, budget_s: float) -> dict[str, float]:
        """Queue wait (ms per request): submit → the handler starts, plus the hop back."""
        marks: dict[str, float] = {}

        def handler(items: Sequence[int]) -> list[float]:
            marks["start"] = time.perf_counter()
            return [0.0] * len(items)

        batcher: MicroBatcher[int, float] = MicroBatcher(
            handler, max_batch=b, max_wait_s=0.0, max_queue=4 * b
        )
        batcher.start()

        async def one_batch() -> float:
            submitted = time.perf_counter()
            await asyncio.gather(*(batcher.submit(i) for i in range(b)))
            return time.perf_counter() - submitted

        try:
            total = await _amedian_s(one_batch, budget_s)
        finally:
            await batcher.stop()
        return {"queue wait": 1e3 * total / b}

    def model_pass(self, m: int, b: int) -> None:
        """The batched ranker pass over B requests, split as ``BatchScorer`` splits it."""
        if getattr(self, "_jobs_key", None) != (m, b):
            self._jobs = [RankJob("svd", self._request(m, u), TOP_K) for u in range(b)]
            self._jobs_key = (m, b)
        ranker = self.model.checkpoint.ranker
        with torch.inference_mode():
            for group in split_jobs(self._jobs, list(range(b)), self.pass_rows):
                ranker.score_requests("svd", [self._jobs[i].request for i in group])
