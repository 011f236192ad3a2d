"""For the tests of the registry: a mode that is not in it, and a user read from a state."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from model.config import RankerConfig
from model.flops import PassFlops, attention_flops
from model.layers import interest_tokens
from model.modes import LoggedEvents, ScoreRequest, UserArrays, UserSource
from model.modes.tokens import SvdMode
from model.ranker import Ranker
from model.serving import Scorable
from model.states import UserState, make_builder


@dataclass(frozen=True)
class StrongestInterest(SvdMode):
    """A new mode, for the test: candidates attend to the strongest interest token alone."""

    name: str = "svd_top1"

    def attend(
        self, ranker: Scorable, cand: Tensor, rows: Tensor, mask: Tensor, weights: Tensor
    ) -> Tensor:
        tokens, live = interest_tokens(rows, mask, weights, ranker.config.rank)  # (B, r, d)
        return ranker.attn(cand, tokens[:, :1], live[:, :1])

    def request(self, candidates: Tensor, user: UserSource) -> ScoreRequest:
        interests = super().request(candidates, user).interests
        assert interests is not None
        return ScoreRequest(candidates, interests=interests[:1])

    def flops(self, config: RankerConfig, candidates: int, rank: int, history: int) -> PassFlops:
        return attention_flops(config, candidates, tokens=1)


def state_user(
    ranker: Ranker, state: UserState, rank: int, logged: LoggedEvents | None = None
) -> UserArrays:
    """``state`` as the service reads it: its builder's features and, for the kinds with
    factors (svd, lifelong), its basis and svd tokens."""
    builder = make_builder(ranker, rank=rank, oversample=0, decay=None, tag="")
    if builder.kind not in ("svd", "lifelong"):
        return UserArrays(builder.features(state), None, logged)
    return UserArrays(builder.features(state), builder.basis(state), logged, builder.tokens(state))
