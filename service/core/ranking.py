"""The /rank use case: map candidate ids to rows, fetch the user's context, await the batched
pass, return the top k as plain values.

The mode's registry entry (``model.modes``) says what it needs and builds the request from
the loaded user: ``svd`` and the state modes (``elastic``, ``linear``, ``mean``:
``model.states``) need one GET of the state; ``svd_exact`` and ``softmax`` also read the event
log and rebuild the history rows from it (``service.core.users`` loads, and rebuilds when
stale). The scoring itself runs in the micro-batcher (``service.scoring``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from model.modes import LoggedEvents, mode_spec
from model.states import UserState
from service.core.items import ItemId
from service.core.raw_ids import RawCandidates
from service.core.serving_model import ServingModel
from service.core.users import LoadedUser, UserStates
from service.errors import InvalidInput
from service.metrics import Metrics
from service.scoring.batcher import MicroBatcher
from service.scoring.scorer import Ranked, RankJob

__all__ = ["RankOutcome", "Ranking"]


class RankOutcome(NamedTuple):
    """The answer to one /rank request.

    Attributes:
        ids: the request's candidate ids, in request order (a lazy view for raw candidates).
        positions: (k,) int64 positions into ``ids`` of the top k, best first.
        scores: (k,) float32 logits of those candidates.
        mode: the attention mode that scored them.
    """

    ids: Sequence[ItemId]
    positions: np.ndarray
    scores: np.ndarray
    unknown_items: list[ItemId]
    history_length: int
    model_version: str
    mode: str

    @property
    def items(self) -> list[tuple[ItemId, float]]:
        """(item id, logit) pairs, best first (raw candidates decode only these k ids)."""
        positions = self.positions.tolist()
        ids = self.ids
        chosen = (
            ids.take(positions) if isinstance(ids, RawCandidates) else [ids[p] for p in positions]
        )
        return list(zip(chosen, self.scores.tolist(), strict=True))


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
        mode: str | None,
        *,
        checked: bool = False,
    ) -> RankOutcome:
        """Score ``candidates`` for ``user_id`` in ``mode`` (None: the model's trained mode);
        unknown ids use the OOV row.

        ``checked``: every candidate is already known to be an int or a 1-256 character
        string (the API's decoder checked them), so the per-id check is skipped
        (``ServingModel.candidate_rows``).

        Raises:
            InvalidInput: a candidate that is not an item id, or a mode this model does not
                serve (422 naming it, or the served modes).
            StoreError, QueueFull, BatcherClosed: 503, try again.
        """
        model = self.users.model
        mode = mode or model.default_mode
        if mode not in model.served_modes:
            served = ", ".join(model.served_modes)
            raise InvalidInput(
                "body.mode",
                f"mode {mode!r} is not served by this model (trained as "
                f"{model.checkpoint.ranker.config.mode!r}); served modes: {served}",
            )
        mapping = time.perf_counter()
        found = model.candidate_rows(candidates, checked=checked)
        self.metrics.stage("lookup", time.perf_counter() - mapping)
        self.metrics.rank_candidates.observe(found.rows.shape[0])
        self.metrics.unknown_items.inc(len(found.unknown))
        cand = torch.from_numpy(found.rows)  # (M,)
        spec = mode_spec(mode)
        loading = time.perf_counter()
        user = await self.users.load(user_id, with_log=spec.reads_log)
        self.metrics.stage("store", time.perf_counter() - loading)
        request = spec.request(cand, _UserInputs(model, user))
        k = top_k if top_k is not None else found.rows.shape[0]
        ranked = await self.batcher.submit(RankJob(mode, request, k))
        return RankOutcome(
            ids=found.ids,
            positions=ranked.positions,
            scores=ranked.scores,
            unknown_items=found.unknown,
            history_length=0 if user.state is None else user.state.n,
            model_version=model.version,
            mode=mode,
        )


@dataclass(frozen=True)
class _UserInputs:
    """A loaded user as the modes' input builders read it (``model.modes.UserSource``)."""

    model: ServingModel
    user: LoadedUser

    def _state(self) -> UserState:
        """The user's state; no history: the empty state (whose features give o_c = 0)."""
        return self.user.state if self.user.state is not None else self.model.states.empty()

    def features(self) -> np.ndarray:
        return self.model.states.features(self._state())

    def tokens(self) -> np.ndarray:
        return self.model.states.tokens(self._state())

    def basis(self) -> np.ndarray:
        if self.user.state is None:
            return np.zeros((self.model.dim, self.model.rank))
        return self.model.states.basis(self.user.state)  # (d, r)

    def events(self) -> LoggedEvents:
        """The log's rows, weighted relative to its latest event."""
        items, actions = self.model.log_rows(self.user.log)
        ts = np.asarray(self.user.log["ts"], dtype=np.float64)
        if self.model.decay is not None and ts.size:
            weights = self.model.decay.weights(ts, float(ts.max()))  # (N,)
        else:
            weights = np.ones(ts.shape[0])
        return LoggedEvents(items, actions, weights)
