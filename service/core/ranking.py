"""The /rank use case: map candidate ids to rows, fetch the user's context, await the batched
pass, return the top k as plain values.

``svd`` and the state modes (``elastic``, ``linear``, ``mean``: ``model.states``) need one GET
of the state; ``svd_exact`` and ``softmax`` also read the event log and rebuild the history
rows from it (``service.core.users`` loads, and rebuilds when stale). The
scoring itself runs in the micro-batcher (``service.scoring``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from model.config import STATE_MODES
from model.ranker import ScoreRequest
from service.core.items import ItemId, candidate_rows
from service.core.users import LoadedUser, UserStates
from service.errors import InvalidInput
from service.metrics import Metrics
from service.scoring.batcher import MicroBatcher
from service.scoring.scorer import Ranked, RankJob

__all__ = ["RankOutcome", "Ranking"]


class RankOutcome(NamedTuple):
    """The answer to one /rank request.

    Attributes:
        ids: the request's candidate ids, in request order.
        positions: (k,) int64 positions into ``ids`` of the top k, best first.
        scores: (k,) float32 logits of those candidates.
    """

    ids: list[ItemId]
    positions: np.ndarray
    scores: np.ndarray
    unknown_items: list[ItemId]
    history_length: int
    model_version: str

    @property
    def items(self) -> list[tuple[ItemId, float]]:
        """(item id, logit) pairs, best first."""
        ids = self.ids
        return [(ids[p], s) for p, s in zip(self.positions.tolist(), self.scores.tolist(),
                                            strict=True)]  # fmt: skip


@dataclass
class Ranking:
    """Builds ranker inputs from the user's state and awaits the micro-batcher."""

    users: UserStates
    metrics: Metrics
    batcher: MicroBatcher[RankJob, Ranked]

    async def rank(
        self,
        user_id: str,
        candidates: Sequence[object],
        top_k: int | None,
        mode: str,
        *,
        checked: bool = False,
    ) -> RankOutcome:
        """Score ``candidates`` for ``user_id`` in ``mode``; unknown ids use the OOV row.

        ``checked``: every candidate is already known to be an int or a 1-256 character
        string (the API's decoder checked them), so the per-id check is skipped.

        Raises:
            InvalidInput: a candidate that is not an item id, or a mode this model does not
                serve (422 naming it, or the served modes).
            StoreError, QueueFull, BatcherClosed: 503, try again.
        """
        model = self.users.model
        if mode not in model.served_modes:
            served = ", ".join(model.served_modes)
            raise InvalidInput(
                "body.mode",
                f"mode {mode!r} is not served by this model (trained as "
                f"{model.checkpoint.ranker.config.mode!r}); served modes: {served}",
            )
        found = candidate_rows(candidates, model.item_index, checked=checked)
        self.metrics.rank_candidates.observe(found.rows.shape[0])
        self.metrics.unknown_items.inc(len(found.unknown))
        cand = torch.from_numpy(found.rows)  # (M,)
        user = await self.users.load(user_id, with_log=mode in ("svd_exact", "softmax"))
        if mode == "svd":
            request = self._svd_input(cand, user)
        elif mode in STATE_MODES:
            request = self._state_input(cand, user, mode)
        else:
            request = self._history_input(cand, user, mode)
        k = top_k if top_k is not None else found.rows.shape[0]
        ranked = await self.batcher.submit(RankJob(mode, request, k))
        return RankOutcome(
            ids=found.ids,
            positions=ranked.positions,
            scores=ranked.scores,
            unknown_items=found.unknown,
            history_length=0 if user.state is None else user.state.n,
            model_version=model.version,
        )

    def _svd_input(self, candidates: torch.Tensor, user: LoadedUser) -> ScoreRequest:
        """The live interest tokens (and, for the hybrid, the latest events' rows) the svd
        builder reads of the state; no history: (r, d) zeros, so o_c = 0."""
        states = self.users.model.states
        state = user.state if user.state is not None else states.empty()
        tokens = states.features(state)  # (live + k', d)
        return ScoreRequest(
            candidates=candidates, interests=torch.from_numpy(tokens.astype(np.float32))
        )

    def _history_input(self, candidates: torch.Tensor, user: LoadedUser, mode: str) -> ScoreRequest:
        model = self.users.model
        items, actions = model.log_rows(user.log)
        ts = np.asarray(user.log["ts"], dtype=np.float64)
        if model.decay is not None and ts.size:
            weights = model.decay.weights(ts, float(ts.max()))  # (N,) relative to the latest
        else:
            weights = np.ones(ts.shape[0])
        r = model.rank
        basis = (
            torch.from_numpy(model.states.basis(user.state)).float()  # (d, r)
            if user.state is not None
            else torch.zeros(model.dim, r)
        )
        return ScoreRequest(
            candidates=candidates,
            history_items=torch.from_numpy(items),
            history_actions=torch.from_numpy(actions),
            weights=torch.from_numpy(weights).float(),
            basis=basis if mode == "svd_exact" else None,
        )

    def _state_input(self, candidates: torch.Tensor, user: LoadedUser, mode: str) -> ScoreRequest:
        """`elastic`: its k tokens as the interests; `linear`, `mean`: the state's summary."""
        states = self.users.model.states
        state = user.state if user.state is not None else states.empty()  # no history: o_c = 0
        features = torch.from_numpy(states.features(state).astype(np.float32))
        if mode == "elastic":
            return ScoreRequest(candidates=candidates, interests=features)  # (k, d)
        return ScoreRequest(candidates=candidates, summary=features)
