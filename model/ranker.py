"""The SOLAR ranker: score(c | user) = MLP([e_c, o_c, e_c ⊙ o_c]) with o_c the attention output.

Event rows are x_j = E_item[i_j] + E_action[a_j] (d-vectors); candidates are E_item[c].
One :class:`TargetAttention` is shared by the `svd`, `svd_exact` and `softmax` modes, so a
model trained in one of them can be served in any other; `linear`, `elastic` and `mean`
are the baselines of the evaluation and own extra layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from model.config import SERVING_MODES, STATE_MODES, RankerConfig
from model.heads import BaselineHead, ScoringMLP, baseline_heads
from model.layers import (
    TargetAttention,
    interest_tokens,
    live_tokens,
    principal_basis,
    project_rows,
)
from model.serving import ServingPass

OOV_ITEM = 0
NO_ACTION = 0


class RankerInputError(ValueError):
    """Inputs to the ranker have the wrong shape, dtype or mode."""


@dataclass(frozen=True)
class HistoryBatch:
    """Padded histories of B users.

    Attributes:
        items: (B, N) long item rows (0 = OOV / padding).
        actions: (B, N) long action rows.
        mask: (B, N) bool, True for real events.
        weights: (B, N) float recency weights w_j (1 without decay).
    """

    items: Tensor
    actions: Tensor
    mask: Tensor
    weights: Tensor


@dataclass(frozen=True)
class ScoreRequest:
    """One user's serving input.

    Attributes:
        candidates: (M,) long item rows.
        interests: (r, d) tokens from the user's factors (`svd`); zeros for no history.
        history_items / history_actions: (N,) long rows of the event log (`svd_exact`, `softmax`).
        weights: (N,) recency weights of those events.
        basis: (d, r) V_r of the user's factors (`svd_exact`).
        recent_items / recent_actions: (k',) long rows of the user's latest events (`svd`
            of a hybrid model, ``recent_tokens`` > 0): their rows join the interest tokens.
        summary: the user's state summary: (H, d_h, d_h + 1) [S_h | z_h] (`linear`) or the
            (d,) weighted mean row (`mean`); `elastic` puts its k tokens in ``interests``.
    """

    candidates: Tensor
    interests: Tensor | None = None
    history_items: Tensor | None = None
    history_actions: Tensor | None = None
    weights: Tensor | None = None
    basis: Tensor | None = None
    recent_items: Tensor | None = None
    recent_actions: Tensor | None = None
    summary: Tensor | None = None


class Ranker(nn.Module):
    """Embeddings, target attention in any mode, and the scoring MLP."""

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.item_emb = nn.Embedding(config.n_items, d)
        self.action_emb = nn.Embedding(config.n_actions, d)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        nn.init.zeros_(self.action_emb.weight)
        self.attn = TargetAttention(d, config.heads)  # shared by svd, svd_exact, softmax
        self.baselines = baseline_heads(config)  # {trained mode: head} for a baseline mode
        self.mlp = ScoringMLP(d, config.mlp_hidden)

    # ------------------------------------------------------------------ embeddings
    def embed_events(self, items: Tensor, actions: Tensor) -> Tensor:
        """(…, N) item and action rows → (…, N, d) event rows x_j."""
        return self.item_emb(items) + self.action_emb(actions)

    def embed_items(self, items: Tensor) -> Tensor:
        """(…, M) candidate rows → (…, M, d)."""
        return self.item_emb(items)

    def score_outputs(self, cand: Tensor, out: Tensor) -> Tensor:
        """cand, out (B, M, d) → logits (B, M): the scoring MLP on [e_c, o_c, e_c ⊙ o_c]."""
        return self.mlp(torch.cat((cand, out, cand * out), dim=-1))

    def serving_pass(self) -> ServingPass:
        """The fused float32 serving pass of this ranker (made once, follows weight updates)."""
        serving: ServingPass | None = self.__dict__.get("_serving")
        if serving is None:
            serving = self.__dict__["_serving"] = ServingPass(self)
        return serving

    # ------------------------------------------------------------------ training path
    def attend(self, mode: str, cand: Tensor, history: HistoryBatch) -> Tensor:
        """Attention output o (B, M, d) for candidates cand (B, M, d) in any mode."""
        rows = self.embed_events(history.items, history.actions)  # (B, N, d)
        mask, weights = history.mask, history.weights
        if mode in self.baselines:
            head = cast(BaselineHead, self.baselines[mode])
            return head(self.attn, cand, rows, mask, weights)
        log_w = torch.log(weights.clamp_min(1e-30))
        r = self.config.rank
        if mode == "svd":
            tokens, live = interest_tokens(rows, mask, weights, r)  # (B, r, d), (B, r)
            k = self.config.recent_tokens
            if k:  # hybrid: the last k events (histories are right-aligned) join the tokens
                tokens = torch.cat((tokens, rows[:, -k:]), dim=1)  # (B, r + k', d)
                live = torch.cat((live, mask[:, -k:]), dim=1)
            return self.attn(cand, tokens, live)
        if mode == "svd_exact":
            basis = principal_basis(rows, mask, weights, r)  # (B, d, r)
            return self.attn(cand, project_rows(rows, basis), mask, log_w)
        if mode == "softmax":
            return self.attn(cand, rows, mask, log_w)
        raise RankerInputError(
            f"mode {mode!r} is not available for a model trained as {self.config.mode!r}"
        )

    def forward(self, candidates: Tensor, history: HistoryBatch, mode: str | None = None) -> Tensor:
        """candidates (B, M) long → logits (B, M), in ``mode`` (default: the trained mode)."""
        cand = self.embed_items(candidates)  # (B, M, d)
        return self.score_outputs(cand, self.attend(mode or self.config.mode, cand, history))

    # ------------------------------------------------------------------ serving path
    def score_requests(self, mode: str, requests: Sequence[ScoreRequest]) -> list[Tensor]:
        """Score many users in one batched pass; returns one (M_i,) logit tensor per request.

        Candidates and context tokens are padded to the batch maximum and masked; the pass is
        :class:`model.serving.ServingPass` (the service calls it with inputs packed already).
        """
        own = (self.config.mode,) if self.config.mode in STATE_MODES else ()
        if mode not in SERVING_MODES + own:
            raise RankerInputError(
                f"serving mode must be one of {SERVING_MODES + own}, got {mode!r}"
            )
        if not requests:
            return []
        device = self.item_emb.weight.device
        rows, _ = _pad_1d([req.candidates for req in requests], device)  # (B, M)
        serving = self.serving_pass()
        if mode in ("svd", "elastic"):  # candidates attend to r interests / k dispatcher tokens
            logits = serving.svd(rows, *self._interest_batch(mode, requests, device))
        elif mode in STATE_MODES:
            summaries = [req.summary for req in requests]
            if any(s is None for s in summaries):
                raise RankerInputError(f"{mode} mode needs a state summary per request")
            stacked = torch.stack([s.float() for s in summaries if s is not None]).to(device)
            logits = serving.state(mode, rows, stacked)
        else:
            logits = serving.history(mode, rows, *self._history_batch(mode, requests, device))
        return [logits[i, : req.candidates.shape[0]].clone() for i, req in enumerate(requests)]

    def _svd_tokens(self, interests: Tensor, req: ScoreRequest) -> Tensor:
        """A request's `svd` tokens: its live interests (‖I_k‖ = σ_k / sqrt(n_eff) > 1e-6·‖I_1‖:
        the others are masked, as in training) followed by the rows of its recent events."""
        live = int(live_tokens(interests.norm(dim=-1)[None])[0].sum())  # (r,) live ones first
        if req.recent_items is None or not req.recent_items.numel():
            return interests[:live] if live else interests
        actions = _or(req.recent_actions, torch.zeros_like(req.recent_items))
        device = interests.device
        recent = self.embed_events(req.recent_items.to(device), actions.to(device))
        return torch.cat((interests[:live], recent.float()))

    def _interest_batch(
        self, mode: str, requests: Sequence[ScoreRequest], device: torch.device
    ) -> tuple[Tensor, Tensor | None]:
        """Tokens (B, T_max, d) and, when some request has fewer than T_max, their mask:
        `elastic`'s k tokens as given, `svd`'s as :meth:`_svd_tokens` makes them."""
        d = self.config.dim
        tokens_list = []
        for req in requests:
            if req.interests is None or req.interests.dim() != 2 or req.interests.shape[1] != d:
                raise RankerInputError(f"svd and elastic need (r, {d}) interests per request")
            tokens = req.interests.to(device).float()
            if mode == "svd":
                tokens = self._svd_tokens(tokens, req)
            tokens_list.append(tokens)
        tokens, mask = _pad_1d(tokens_list, device)
        return tokens, None if bool(mask.all()) else mask

    def _history_batch(
        self, mode: str, requests: Sequence[ScoreRequest], device: torch.device
    ) -> tuple[tuple[Tensor, Tensor], Tensor, Tensor, Tensor | None]:
        """((items, actions) (B, N), mask (B, N), log weights (B, N), basis (B, d, r) or None)."""
        empty = torch.zeros(0, dtype=torch.long)
        history = [_or(req.history_items, empty) for req in requests]
        items, mask = _pad_1d(history, device)  # (B, N)
        actions, _ = _pad_1d(
            [_or(req.history_actions, torch.zeros_like(h)) for req, h in zip(requests, history,
                                                                            strict=True)],
            device,
        )  # fmt: skip
        weights, _ = _pad_1d(
            [_or(req.weights, torch.ones(h.shape[0])).float() for req, h in zip(requests, history,
                                                                              strict=True)],
            device,
        )  # fmt: skip
        log_w = torch.log(weights.clamp_min(1e-30))
        if mode != "svd_exact":
            return (items, actions), mask, log_w, None
        bases = [req.basis for req in requests]
        if any(b is None for b in bases):
            raise RankerInputError("svd_exact mode needs a (d, r) basis per request")
        basis = torch.stack(
            [b.to(device=device, dtype=torch.float32) for b in bases if b is not None]
        )
        return (items, actions), mask, log_w, basis


def _or(value: Tensor | None, default: Tensor) -> Tensor:
    return default if value is None else value


def _pad_1d(seqs: Sequence[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-pad tensors along their first dim to (B, L_max, ...) with zeros; returns (padded,
    (B, L_max) bool mask of the real entries)."""
    length = max((s.shape[0] for s in seqs), default=0)
    first = seqs[0] if seqs else torch.zeros(0, dtype=torch.long)
    padded = torch.zeros(len(seqs), length, *first.shape[1:], dtype=first.dtype, device=device)
    mask = torch.zeros(len(seqs), length, dtype=torch.bool, device=device)
    for i, s in enumerate(seqs):
        padded[i, : s.shape[0]] = s.to(device)
        mask[i, : s.shape[0]] = True
    return padded, mask
