"""POST /rank logic: fetch the user's context, queue it for the batched pass, take the top k.

``svd`` needs one GET of the state; ``svd_exact`` and ``softmax`` also read the event log and
rebuild the history rows from it. A state written under another model (or configuration) is
rebuilt from the log on first access and written back. The scoring itself is
:func:`make_scorer`, the micro-batcher's handler: it runs in a worker thread under
``torch.inference_mode`` and groups the batch by mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple, cast

import numpy as np
import torch

from model.lowrank import LowRankState
from model.ranker import OOV_ITEM, ScoreRequest
from service.batcher import MicroBatcher
from service.errors import InvalidInput
from service.eventlog import decode_log
from service.factors import parse_state
from service.metrics import Metrics
from service.rebuild import rebuild_and_replace
from service.runtime import ServingModel
from service.schemas import (
    ITEM_ID_ERROR,
    MAX_ITEM_ID_LENGTH,
    ItemId,
    Mode,
    RankedItem,
    RankRequest,
    RankResponse,
    item_id_or_none,
)
from service.store import Store

__all__ = ["RankJob", "Ranked", "Ranking", "candidate_rows", "make_scorer"]

logger = logging.getLogger(__name__)

# Candidate rows per `svd` pass. Past ~8k rows (4 requests of M=2,048) the MLP's activations
# leave the CPU caches and a request costs ~20% more CPU than in a smaller pass (measured:
# 3.0 ms per request at B ≤ 4, 3.5 ms at B = 8, one thread).
SVD_PASS_ROWS = 8_192


@dataclass(frozen=True)
class RankJob:
    """One request for the batched pass: mode, ranker input and how many results to keep."""

    mode: str
    request: ScoreRequest
    top_k: int


class Ranked(NamedTuple):
    """Top-k of one request: candidate positions and their logits, best first."""

    indices: list[int]
    scores: list[float]


def candidate_rows(
    candidates: Sequence[object], index: dict[int | str, int]
) -> tuple[list[ItemId], list[int], list[ItemId]]:
    """Validate candidate ids and map them to model rows.

    Returns (ids, rows, unknown ids); unknown ids get the OOV row. Ints and strings (the
    normal case) take a vectorised path; anything else is checked one by one.

    Raises:
        InvalidInput: naming ``body.candidates.<i>`` for the first id that is not an integer
            or a 1-256 character string.
    """
    kinds = set(map(type, candidates))
    if kinds == {str}:  # C-level length checks
        lengths = list(map(len, cast("Sequence[str]", candidates)))
        plain = 0 < min(lengths) and max(lengths) <= MAX_ITEM_ID_LENGTH
    else:
        plain = kinds <= {int, str} and all(
            0 < len(c) <= MAX_ITEM_ID_LENGTH for c in candidates if isinstance(c, str)
        )
    if not plain:
        return _checked_rows(candidates, index)
    ids = cast("list[ItemId]", list(candidates))
    rows = list(map(index.get, ids, repeat(OOV_ITEM)))
    unknown = [c for c, row in zip(ids, rows, strict=True) if row == OOV_ITEM]
    return ids, rows, unknown


def _checked_rows(
    candidates: Sequence[object], index: dict[int | str, int]
) -> tuple[list[ItemId], list[int], list[ItemId]]:
    ids: list[ItemId] = []
    for i, raw in enumerate(candidates):
        item = item_id_or_none(raw)  # bools are refused, whole floats become ints
        if item is None:
            raise InvalidInput(f"body.candidates.{i}", ITEM_ID_ERROR)
        ids.append(item)
    rows = [index.get(c, OOV_ITEM) for c in ids]
    unknown = [c for c, row in zip(ids, rows, strict=True) if row == OOV_ITEM]
    return ids, rows, unknown


def _history_size(job: RankJob) -> int:
    items = job.request.history_items
    return max(1, 0 if items is None else int(items.shape[0]))


def _chunks(jobs: Sequence[RankJob], idxs: list[int], max_elements: int) -> list[list[int]]:
    """Split history-mode jobs so that B·M_max·N_max stays under ``max_elements``."""
    chunks: list[list[int]] = []
    current: list[int] = []
    max_m = max_n = 0
    for i in idxs:
        m = int(jobs[i].request.candidates.shape[0])
        n = _history_size(jobs[i])
        grown_m, grown_n = max(max_m, m), max(max_n, n)
        if current and (len(current) + 1) * grown_m * grown_n > max_elements:
            chunks.append(current)
            current, grown_m, grown_n = [], m, n
        current.append(i)
        max_m, max_n = grown_m, grown_n
    if current:
        chunks.append(current)
    return chunks


def make_scorer(
    model: ServingModel, history_batch_elements: int
) -> Callable[[Sequence[RankJob]], list[Ranked]]:
    """The batch handler: logits for every job, grouped by mode, then top-k per job."""
    ranker = model.checkpoint.ranker

    def score(jobs: Sequence[RankJob]) -> list[Ranked]:
        by_mode: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_mode.setdefault(job.mode, []).append(i)
        results: dict[int, Ranked] = {}
        with torch.inference_mode():
            for mode, idxs in by_mode.items():
                limit = SVD_PASS_ROWS if mode == "svd" else history_batch_elements
                groups = _chunks(jobs, idxs, limit)
                for group in groups:
                    logits = ranker.score_requests(mode, [jobs[i].request for i in group])
                    for i, row in zip(group, logits, strict=True):
                        k = min(jobs[i].top_k, int(row.shape[0]))
                        values, positions = torch.topk(row.float(), k)  # descending
                        results[i] = Ranked(positions.tolist(), values.tolist())
        return [results[i] for i in range(len(jobs))]

    return score


@dataclass
class Ranking:
    """Builds ranker inputs from the store and awaits the micro-batcher."""

    store: Store
    model: ServingModel
    metrics: Metrics
    batcher: MicroBatcher[RankJob, Ranked]

    async def rank(self, body: RankRequest) -> RankResponse:
        """Score ``body.candidates`` for ``body.user_id``; unknown ids use the OOV row."""
        ids, rows, unknown = candidate_rows(body.candidates, self.model.item_index)
        self.metrics.rank_candidates.observe(len(rows))
        self.metrics.unknown_items.inc(len(unknown))
        candidates = torch.tensor(rows, dtype=torch.long)  # (M,)
        mode = body.mode.value
        if mode == Mode.svd.value:
            request, history_length = await self._svd_input(body.user_id, candidates)
        else:
            request, history_length = await self._history_input(body.user_id, candidates, mode)
        top_k = body.top_k if body.top_k is not None else len(rows)
        ranked = await self.batcher.submit(RankJob(mode, request, top_k))
        items = [
            RankedItem(item_id=ids[i], score=s)
            for i, s in zip(ranked.indices, ranked.scores, strict=True)
        ]
        return RankResponse(
            user_id=body.user_id,
            model_version=self.model.version,
            mode=body.mode,
            history_length=history_length,
            items=items,
            unknown_items=unknown,
        )

    async def _svd_input(self, user_id: str, candidates: torch.Tensor) -> tuple[ScoreRequest, int]:
        blob = await self.store.get_state(user_id)  # the one round trip of a known user
        parsed = parse_state(blob, self.model)
        state = parsed.state
        if blob is None or parsed.rebuild is not None:
            # A new user, or a state to rebuild: the log tells whether history exists.
            record = await self.store.read(user_id, with_log=True)
            parsed = parse_state(record.state, self.model, log_present=len(record.log) > 0)
            state = parsed.state
            if parsed.rebuild is not None:
                state = await self._rebuild(user_id, record.log, record.version, parsed.rebuild)
        r = self.model.rank
        if state is None:
            interests = torch.zeros(r, self.model.dim)  # no history: o_c = 0
        else:
            interests = torch.from_numpy(state.interests(r)).float()  # (r, d)
        return ScoreRequest(candidates=candidates, interests=interests), _length(state)

    async def _history_input(
        self, user_id: str, candidates: torch.Tensor, mode: str
    ) -> tuple[ScoreRequest, int]:
        record = await self.store.read(user_id, with_log=True)
        parsed = parse_state(record.state, self.model, log_present=len(record.log) > 0)
        state = parsed.state
        if parsed.rebuild is not None:
            state = await self._rebuild(user_id, record.log, record.version, parsed.rebuild)
        records = decode_log(record.log)
        items, actions = self.model.log_rows(records)
        ts = np.asarray(records["ts"], dtype=np.float64)
        decay = self.model.decay
        if decay is not None and ts.size:
            weights = decay.weights(ts, float(ts.max()))  # (N,) relative to the latest event
        else:
            weights = np.ones(ts.shape[0])
        r = self.model.rank
        basis = (
            torch.from_numpy(np.ascontiguousarray(state.V[:, :r])).float()  # (d, r)
            if state is not None
            else torch.zeros(self.model.dim, r)
        )
        request = ScoreRequest(
            candidates=candidates,
            history_items=torch.from_numpy(items),
            history_actions=torch.from_numpy(actions),
            weights=torch.from_numpy(weights).float(),
            basis=basis if mode == Mode.svd_exact.value else None,
        )
        return request, _length(state)

    async def _rebuild(self, user_id: str, log: bytes, version: int, reason: str) -> LowRankState:
        """Rebuild a stale state from the log and write it back unless someone else wrote."""
        state, _ = await rebuild_and_replace(
            self.store, self.model, self.metrics, user_id, version, log, reason
        )
        return state


def _length(state: LowRankState | None) -> int:
    return 0 if state is None else state.n
