"""What every attention mode is: the :class:`Mode` interface, one request, its errors.

A mode is one way candidates read a user: the r interest tokens of the svd factors, the N
logged events, a baseline's compressed state. Each mode is one object of
``model.modes.registry`` that knows, for that way alone, the training path, the serving input
built from a user, the padded batch, the fused pass that scores it and its FLOPs; callers look
the object up once by name and never branch on the name themselves.

Shapes: B requests, M candidates, T context tokens, N events, d = H·d_h, r the served rank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from torch import Tensor

from model.config import RankerConfig
from model.flops import PassFlops
from model.heads import BaselineHead
from model.layers import Interests, interest_tokens
from model.modes.inputs import UserSource
from model.modes.packing import Buffers, PackedBatch
from model.serving import Scorable, ServingPass

__all__ = [
    "FromInterests",
    "HeadFactory",
    "Mode",
    "RankerInputError",
    "ScoreRequest",
    "UnknownModeError",
    "own_head",
]

# A baseline head's class: builds the mode's own layers from the ranker's configuration.
HeadFactory = Callable[[RankerConfig], BaselineHead]


class RankerInputError(ValueError):
    """Inputs to the ranker have the wrong shape, dtype or mode."""


class UnknownModeError(RankerInputError):
    """A mode name with no entry in the registry (the message lists the known ones)."""


@dataclass(frozen=True)
class ScoreRequest:
    """One user's serving input (CPU tensors); each mode reads only its own fields.

    Attributes:
        candidates: (M,) long item rows.
        interests: (T, d) context tokens: `svd`'s live interest tokens (followed by the rows of
            the hybrid's latest events), `elastic`'s k dispatcher tokens; (r, d) zeros for a
            user with no history.
        history_items / history_actions: (N,) long rows of the event log (`svd_exact`,
            `softmax`); no actions means "no action" (row 0).
        weights: (N,) recency weights of those events (None: all 1).
        basis: (d, r) V_r of the user's factors (`svd_exact`).
        summary: the user's state summary: (H, d_h, d_h + 1) [S_h | z_h] (`linear`) or the
            (d,) weighted mean row (`mean`).
        recent: (L', d) rows of the user's latest events, L' ≤ L (`lifelong`'s short-term
            channel; its ``interests`` are then the live interest tokens alone).
        repeats: (M, 2) the candidates' repeat features (`lifelong` with item counts,
            ``model.repeats.repeat_features``).
    """

    candidates: Tensor
    interests: Tensor | None = None
    history_items: Tensor | None = None
    history_actions: Tensor | None = None
    weights: Tensor | None = None
    basis: Tensor | None = None
    summary: Tensor | None = None
    recent: Tensor | None = None
    repeats: Tensor | None = None


class Mode(Protocol):
    """One attention mode: everything that differs from one mode to another.

    Attributes:
        name: the mode's name in configs, checkpoints and /rank bodies.
        state_kind: the per-user state it is served from (``model.states``): ``svd`` for the
            modes of the shared target attention, the mode's own kind for a baseline.
        reads_log: its input needs the user's event log (the context grows with N, so its
            passes are bounded by B·M·N rather than by B·M).
        head: the layers of its own (``model.heads``), created only for a model trained in
            this mode; None for the modes of the shared target attention.
        channels: attention outputs C it feeds the scoring MLP, one per channel (2 for
            `lifelong`'s long- and short-term channels, else 1).
    """

    @property
    def name(self) -> str: ...

    @property
    def state_kind(self) -> str: ...

    @property
    def reads_log(self) -> bool: ...

    @property
    def head(self) -> HeadFactory | None: ...

    @property
    def channels(self) -> int: ...

    def attend(
        self, ranker: Scorable, cand: Tensor, rows: Tensor, mask: Tensor, weights: Tensor
    ) -> Tensor:
        """Training path: cand (B, M, d), event rows (B, N, d), mask (B, N) bool, recency
        weights (B, N) → attention output o (B, M, C·d), C = ``channels``."""
        ...

    def request(self, candidates: Tensor, user: UserSource) -> ScoreRequest:
        """The serving input of one user for candidates (M,), read from ``user``."""
        ...

    def example(self, config: RankerConfig, rank: int, candidates: Tensor) -> ScoreRequest:
        """A small valid input (random context) for warming the pass up."""
        ...

    def pack(self, requests: Sequence[ScoreRequest], dim: int, buffers: Buffers) -> PackedBatch:
        """The requests padded into one batch in ``buffers``: always ``rows`` (B, M) and
        ``lengths`` (B,), plus the mode's context arrays.

        Raises:
            RankerInputError: a request lacks the mode's input or has the wrong shape.
        """
        ...

    def score(self, serving: ServingPass, inputs: dict[str, Tensor]) -> Tensor:
        """(B, M) float32 logits of the packed batch."""
        ...

    def flops(self, config: RankerConfig, candidates: int, rank: int, history: int) -> PassFlops:
        """FLOPs of scoring ``candidates`` for one user (``model.flops``)."""
        ...


def own_head(ranker: Scorable, mode: str) -> BaselineHead:
    """The layers a baseline ``mode`` owns in ``ranker``, which exist only if the ranker was
    trained in that mode (else RankerInputError)."""
    if mode not in ranker.baselines:
        raise RankerInputError(
            f"mode {mode!r} is not available for a model trained as {ranker.config.mode!r}"
        )
    return cast(BaselineHead, ranker.baselines[mode])


class FromInterests:
    """The training path of a mode that reads the users' svd interest tokens (`svd`,
    `lifelong`): ``attend`` makes them (one batch SVD), ``attend_interests`` reads them, so a
    caller that already made them (the svd read-out's training step) does not make them twice.
    """

    def attend(
        self, ranker: Scorable, cand: Tensor, rows: Tensor, mask: Tensor, weights: Tensor
    ) -> Tensor:
        interests = interest_tokens(rows, mask, weights, ranker.config.rank)
        return self.attend_interests(ranker, cand, interests, rows, mask)

    def attend_interests(
        self, ranker: Scorable, cand: Tensor, interests: Interests, rows: Tensor, mask: Tensor
    ) -> Tensor:
        """o (B, M, C·d) of candidates cand (B, M, d) from the users' interest tokens
        (``interest_tokens``: (B, r, d) and their (B, r) live mask), event rows (B, N, d) and
        mask (B, N)."""
        raise NotImplementedError
