"""`lifelong`: a long-term and a short-term channel, each with its own softmax and its own
attention output into the scoring MLP (docs/DESIGN.md §2).

* Long-term: the r interest tokens of the user's svd factors over the whole history (decayed
  by ``half_life_s`` when set, so an old interest fades: the time-aware channel).
* Short-term: the rows of the user's L latest raw events (``recent_tokens`` = L, the window
  the svd state keeps beside its factors, ``model.states.svd.recent``).

* Repeats (with ``repeat_buckets`` = K > 0): the candidate's own weighted count over the whole
  history, read from hashed item counts the state keeps (``model.repeats``), as two features.

Unlike the `svd` hybrid, whose one softmax spans both, long-term tokens cannot take softmax
mass from recent evidence: the MLP sees [e, o_long, e ⊙ o_long, o_short, e ⊙ o_short] (and
the repeat features last). Both attention channels share the target attention's projections;
the state is the hybrid's (factors + window, + item counts), its builder's ``features``
marking each row's channel in an extra last column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from model.config import RankerConfig
from model.flops import PassFlops, attention_flops
from model.layers import Interests
from model.modes.base import FromInterests, HeadFactory, RankerInputError, ScoreRequest
from model.modes.inputs import UserSource
from model.modes.packing import Buffers, PackedBatch, candidate_layout, fill, fill_candidates
from model.repeats import REPEAT_FEATURES, REPEAT_HASHES, served_repeat_features
from model.serving import Scorable, ServingPass

__all__ = ["LONG_TERM", "REPEATS", "SHORT_TERM", "LifelongMode"]

# Channel marks of the last column of a lifelong state's features (REPEATS: the item counts,
# flattened into rows of d).
LONG_TERM, SHORT_TERM, REPEATS = 0.0, 1.0, 2.0


@dataclass(frozen=True)
class LifelongMode(FromInterests):
    """`lifelong`: candidates attend to the interest tokens and, apart, to the latest rows.

    Batch arrays: ``tokens`` (B, r_max, d) with ``token_mask`` (B, r_max) bool and
    ``recent`` (B, L_max, d) with ``recent_mask`` (B, L_max) bool (both at least one wide),
    and for a model with item counts ``repeats`` (B, M, 2) (M as ``rows``; zeros in the
    padding).
    """

    name: str = "lifelong"
    state_kind: str = "lifelong"
    reads_log: bool = False
    head: HeadFactory | None = None
    channels: int = 2

    def attend_interests(
        self, ranker: Scorable, cand: Tensor, interests: Interests, rows: Tensor, mask: Tensor
    ) -> Tensor:
        """o (B, M, 2d) from the users' interest tokens already made (``interest_tokens``)."""
        tokens, live = interests  # (B, r, d), (B, r)
        L = ranker.config.recent_tokens  # histories are right-aligned: the last L are latest
        queries = ranker.attn.w_q(cand)  # (B, M, d): projected once for both channels
        long_term = ranker.attn.attend(queries, tokens, live)  # (B, M, d)
        short_term = ranker.attn.attend(queries, rows[:, -L:], mask[:, -L:])  # (B, M, d)
        return torch.cat((long_term, short_term), dim=-1)  # (B, M, 2d)

    def request(self, candidates: Tensor, user: UserSource) -> ScoreRequest:
        """Splits the builder's features (T, d + 1) by their channel column; with item counts,
        reads the candidates' counts (M,) from them into repeat features (M, 2)."""
        features = user.features()
        channel = features[:, -1]

        def rows(mark: float) -> Tensor:  # one copy, to float32, of one channel's rows
            return torch.from_numpy(np.asarray(features[channel == mark, :-1], dtype=np.float32))

        counted = channel == REPEATS
        repeats = None
        if counted.any():  # the counts stay float64: only the candidates' are read
            counts = features[counted, :-1].reshape(REPEAT_HASHES, -1)
            repeats = served_repeat_features(candidates, counts)
        return ScoreRequest(
            candidates, interests=rows(LONG_TERM), recent=rows(SHORT_TERM), repeats=repeats
        )

    def example(self, config: RankerConfig, rank: int, candidates: Tensor) -> ScoreRequest:
        M = candidates.shape[0]
        repeats = torch.rand(M, REPEAT_FEATURES) if config.repeat_buckets else None
        return ScoreRequest(
            candidates,
            interests=torch.randn(rank, config.dim),
            recent=torch.randn(config.recent_tokens, config.dim),
            repeats=repeats,
        )

    def pack(self, requests: Sequence[ScoreRequest], dim: int, buffers: Buffers) -> PackedBatch:
        groups: dict[str, list[Tensor]] = {"tokens": [], "recent": []}
        for req in requests:
            for name, value in (("tokens", req.interests), ("recent", req.recent)):
                if value is None or value.dim() != 2 or value.shape[1] != dim:
                    raise RankerInputError(
                        f"{self.name} needs (T, {dim}) interests and recent rows per request"
                    )
                groups[name].append(value)
        repeats = [req.repeats for req in requests]
        with_repeats = sum(r is not None for r in repeats)
        if with_repeats not in (0, len(requests)):
            raise RankerInputError(f"{self.name}: repeat features in some requests, not all")
        B = len(requests)
        cands = [q.candidates for q in requests]
        layout = candidate_layout(cands)
        for name, values in groups.items():
            T = max(1, *(int(v.shape[0]) for v in values))
            layout += [(name, (B, T, dim), np.float32), (f"{name}_mask", (B, T), np.bool_)]
        if with_repeats:
            M = layout[0][1][1]  # the padded M of ``rows``
            layout.append(("repeats", (B, M, REPEAT_FEATURES), np.float32))
        packed = buffers.pack(layout)
        host = packed.host
        fill_candidates(host, cands)
        for name, values in groups.items():
            fill(host[name], [v.float() for v in values])
            counts = np.asarray([int(v.shape[0]) for v in values])
            host[f"{name}_mask"][:] = np.arange(host[name].shape[1])[None, :] < counts[:, None]
        if with_repeats:
            _fill_repeats(host["repeats"], repeats, cands)
        return packed

    def score(self, serving: ServingPass, inputs: dict[str, Tensor]) -> Tensor:
        return serving.channels(
            inputs["rows"],
            inputs["tokens"],
            inputs["tokens_mask"],
            inputs["recent"],
            inputs["recent_mask"],
            inputs.get("repeats"),
        )

    def flops(self, config: RankerConfig, candidates: int, rank: int, history: int) -> PassFlops:
        """Over the r tokens and the L rows (the MLP's wider first layer is not counted)."""
        return attention_flops(config, candidates, tokens=rank + config.recent_tokens)


def _fill_repeats(
    out: NDArray[np.float32], repeats: Sequence[Tensor | None], candidates: Sequence[Tensor]
) -> None:
    """Each request's (M_i, 2) repeat features into ``out`` (B, M_max, 2), zeros after."""
    out[...] = 0
    for row, value, cand in zip(out, repeats, candidates, strict=True):
        if value is None or tuple(value.shape) != (cand.shape[0], REPEAT_FEATURES):
            raise RankerInputError(f"lifelong needs (M, {REPEAT_FEATURES}) repeat features")
        row[: cand.shape[0]] = value.float().numpy(force=True)
