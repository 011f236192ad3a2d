"""The stages of a `svd` POST /rank, each callable alone through the service's own code, for
``bench/micro/stages.py``.

A stage here calls exactly what the route and the use case call for it, in the same order,
so that the sum of the stages is the request minus the HTTP server and framework overhead
(which the HTTP measurement of ``bench/micro/stages.py`` shows).
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

import msgspec
import numpy as np
import torch

from bench.micro.roofline import median_s
from model.ranker import ScoreRequest
from service.api.rank_body import decode_rank_body, encode_rank_response
from service.backends import open_backends
from service.core.ranking import RankOutcome
from service.core.serving_model import ServingModel, load_serving_model
from service.core.users import parse_state
from service.scoring.batcher import MicroBatcher
from service.scoring.scorer import BatchScorer, RankJob
from service.settings import Settings
from service.store.base import Store

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
JSON = "application/json"
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
    """A loaded model, a store holding ``users`` seeded states, and the batch scorer."""

    model: ServingModel
    store: Store
    users: list[str]
    blobs: list[bytes]  # the users' stored states, as GET returns them
    scorer: BatchScorer

    @classmethod
    async def open(cls, model_dir: Path, redis_url: str, users: int) -> RankPath:
        settings = Settings(model_path=model_dir, redis_url=redis_url, device="cpu")
        model = load_serving_model(settings)
        store = (await open_backends(settings)).store  # its client serves the stream too
        rng = np.random.default_rng(0)
        names = [f"s{u}" for u in range(users)]
        for name in names:
            items = rng.integers(1, len(model.checkpoint.vocab.items) + 1, size=HISTORY)
            ts = 1.7e9 + np.arange(HISTORY, dtype=np.float64)
            state = model.states.from_events(items, np.zeros_like(items), ts)  # (N,) events
            # A state with no events behind it (the fence allows applied = seq = 0).
            await store.commit_state(
                name, model.version, state.to_bytes(), gen=0, expected_applied=0, applied=0
            )
        blobs = [await store.get_state(name, model.version) for name in names]
        scorer = BatchScorer(
            model.checkpoint.ranker, settings.history_batch_elements, pass_rows=settings.pass_rows
        )
        return cls(model, store, names, [b for b in blobs if b is not None], scorer)

    async def close(self) -> None:
        await self.store.close()

    # ----------------------------------------------------------------- inputs
    def body(self, m: int, user: int = 0) -> bytes:
        """A /rank body as the load generators send it: M distinct ids (strings)."""
        items = list(self.model.checkpoint.vocab.items)
        candidates = random.Random(m + user).sample(items, m)
        payload = {"user_id": self.users[user], "candidates": candidates, "top_k": TOP_K}
        return json.dumps(payload).encode()

    def _request(self, m: int, user: int) -> ScoreRequest:
        query = decode_rank_body(self.body(m, user), JSON)
        found = self.model.candidate_rows(query.candidates, checked=query.checked)
        loaded = parse_state(self.blobs[user], self.model).state
        assert loaded is not None
        interests = torch.from_numpy(self.model.states.features(loaded).astype(np.float32))
        return ScoreRequest(torch.from_numpy(found.rows), interests=interests)

    # ----------------------------------------------------------------- stages
    async def request_stages(self, m: int, budget_s: float) -> dict[str, float]:
        """Per-request stages (ms) that do not depend on the batch size.

        Decoding and validation are one msgspec pass; "decode" is the same bytes decoded
        without a schema, "validate" what the schema adds.
        """
        body = self.body(m)
        query = decode_rank_body(body, JSON)
        blob = self.blobs[0]
        model, states = self.model, self.model.states

        def ids() -> object:
            found = model.candidate_rows(query.candidates, checked=query.checked)
            return torch.from_numpy(found.rows)

        def state() -> object:
            loaded = parse_state(blob, self.model).state
            assert loaded is not None
            return torch.from_numpy(states.features(loaded).astype(np.float32))

        found = model.candidate_rows(query.candidates, checked=query.checked)
        logits = torch.randn(1, m)
        job = RankJob("svd", ScoreRequest(torch.from_numpy(found.rows)), TOP_K)
        lengths = {"lengths": torch.tensor([m])}
        (ranked,) = self.scorer.top_k(logits.clone(), lengths, [job])
        outcome = RankOutcome(
            found.ids,
            ranked.positions,
            ranked.scores,
            found.unknown,
            HISTORY,
            self.model.version,
            "svd",
        )
        raw = median_s(lambda: msgspec.json.decode(body), budget_s)
        typed = median_s(lambda: decode_rank_body(body, JSON), budget_s)
        seconds = {
            "decode": raw,
            "validate": max(0.0, typed - raw),
            "ids → rows": median_s(ids, budget_s),
            "store GET": await _amedian_s(
                lambda: self.store.get_state(self.users[0], self.model.version), budget_s
            ),
            "state + interests": median_s(state, budget_s),
            "top-k": median_s(lambda: self.scorer.top_k(logits.clone(), lengths, [job]), budget_s),
            "encode": median_s(lambda: encode_rank_response(query, outcome), budget_s),
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
        """The batched pass over B requests as ``BatchScorer`` runs it (split into passes of
        at most ``pass_rows`` candidate rows, each packed and sent in one copy), top-k aside."""
        if getattr(self, "_jobs_key", None) != (m, b):
            self._jobs = [RankJob("svd", self._request(m, u), TOP_K) for u in range(b)]
            self._jobs_key = (m, b)
        with torch.inference_mode():
            for group in self.scorer.passes(self._jobs):
                jobs = [self._jobs[i] for i in group]
                self.scorer.logits("svd", self.scorer.send("svd", jobs))
