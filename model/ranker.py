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
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import SERVING_MODES, RankerConfig
from model.heads import BaselineHead, ScoringMLP, baseline_heads
from model.layers import TargetAttention, interest_tokens, principal_basis, project_rows

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
    """

    candidates: Tensor
    interests: Tensor | None = None
    history_items: Tensor | None = None
    history_actions: Tensor | None = None
    weights: Tensor | None = None
    basis: Tensor | None = None


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

    def score_outputs(self, cand: Tensor, out: Tensor, item_hidden: Tensor | None = None) -> Tensor:
        """cand, out (B, M, d) → logits (B, M).

        ``item_hidden`` (B, M, hidden), when given, is the candidates' precomputed share
        W1[:, :d] e_c + b1 of the MLP's first layer (see :meth:`serving_tables`).
        """
        if item_hidden is None:
            return self.mlp(torch.cat((cand, out, cand * out), dim=-1))
        first = self.mlp.fc1
        B, M, d = cand.shape
        w_out, w_prod = first.weight[:, d : 2 * d], first.weight[:, 2 * d :]  # (hidden, d) each
        flat_out = out.reshape(B * M, d)
        hidden = torch.addmm(item_hidden.reshape(B * M, -1), flat_out, w_out.T)
        hidden = torch.addmm(hidden, cand.reshape(B * M, d) * flat_out, w_prod.T)  # (B·M, hidden)
        return self.mlp.after_fc1(hidden).view(B, M)

    def serving_tables(self) -> tuple[Tensor, Tensor]:
        """Per-item precomputations of the serving path, rebuilt whenever a weight changes.

        Returns (E W_Qᵀ (n_items, d), E W1[:, :d]ᵀ + b1 (n_items, hidden)): the parts of the
        query projection and of the MLP's first layer that depend on the candidate alone, so a
        request gathers rows instead of multiplying M×d by d×(d + hidden) again (~27% of the
        FLOPs of an `svd` request at M=2,048).
        """
        first = self.mlp.fc1
        params = (self.item_emb.weight, self.attn.w_q.weight, first.weight, first.bias)
        key = tuple((p.data_ptr(), p._version, p.device) for p in params)
        if getattr(self, "_tables_key", None) != key:
            d = self.config.dim
            # Plain tensors (not inference tensors), usable whatever mode the caller is in.
            with torch.inference_mode(False), torch.no_grad():
                emb = self.item_emb.weight
                tables = (emb @ self.attn.w_q.weight.T, emb @ first.weight[:, :d].T + first.bias)
            self._tables: tuple[Tensor, Tensor] = tables
            self._tables_key = key
        return self._tables

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
            tokens = interest_tokens(rows, mask, weights, r)  # (B, r, d)
            return self.attn(cand, tokens, mask.any(dim=1, keepdim=True).expand(-1, r))
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

        Candidates and context tokens are padded to the batch maximum and masked.
        """
        if mode not in SERVING_MODES:
            raise RankerInputError(f"serving mode must be one of {SERVING_MODES}, got {mode!r}")
        if not requests:
            return []
        device = self.item_emb.weight.device
        cand_items, _ = _pad_1d([req.candidates for req in requests], device)  # (B, M)
        cand = self.embed_items(cand_items)  # (B, M, d)
        query_table, hidden_table = self.serving_tables()
        queries = F.embedding(cand_items, query_table)  # (B, M, d) = cand W_Qᵀ
        if mode == "svd":
            out = self._attend_interests(queries, requests, device)
        else:
            out = self._attend_history(mode, queries, requests, device)
        logits = self.score_outputs(cand, out, F.embedding(cand_items, hidden_table))  # (B, M)
        return [logits[i, : req.candidates.shape[0]] for i, req in enumerate(requests)]

    def _attend_interests(
        self, queries: Tensor, requests: Sequence[ScoreRequest], device: torch.device
    ) -> Tensor:
        d = self.config.dim
        tokens_list = []
        for req in requests:
            if req.interests is None or req.interests.dim() != 2 or req.interests.shape[1] != d:
                raise RankerInputError(f"svd mode needs (r, {d}) interests per request")
            tokens_list.append(req.interests.to(device=device, dtype=queries.dtype))
        r = max(t.shape[0] for t in tokens_list)
        tokens = torch.zeros(len(requests), r, d, device=device, dtype=queries.dtype)  # (B, r, d)
        mask = torch.zeros(len(requests), r, dtype=torch.bool, device=device)  # (B, r)
        for i, t in enumerate(tokens_list):
            tokens[i, : t.shape[0]] = t
            mask[i, : t.shape[0]] = bool(t.abs().sum() > 0)  # a user with no history: o = 0
        return self.attn.attend(queries, tokens, mask)

    def _attend_history(
        self, mode: str, queries: Tensor, requests: Sequence[ScoreRequest], device: torch.device
    ) -> Tensor:
        empty = torch.zeros(0, dtype=torch.long)
        items, mask = _pad_1d([_or(req.history_items, empty) for req in requests], device)  # (B, N)
        actions, _ = _pad_1d(
            [
                _or(req.history_actions, torch.zeros_like(_or(req.history_items, empty)))
                for req in requests
            ],
            device,
        )
        weights, _ = _pad_1d(
            [_or(req.weights, torch.ones(mask.shape[1])).float() for req in requests], device
        )
        rows = self.embed_events(items, actions)  # (B, N, d)
        log_w = torch.log(weights.clamp_min(1e-30))
        if mode == "svd_exact":
            bases = [req.basis for req in requests]
            if any(b is None for b in bases):
                raise RankerInputError("svd_exact mode needs a (d, r) basis per request")
            basis = torch.stack(
                [b.to(device=device, dtype=rows.dtype) for b in bases if b is not None]
            )
            rows = project_rows(rows, basis)
        return self.attn.attend(queries, rows, mask, log_w)


def _or(value: Tensor | None, default: Tensor) -> Tensor:
    return default if value is None else value


def _pad_1d(seqs: Sequence[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D tensors to (B, L_max) with zeros; returns (padded, bool mask)."""
    length = max((s.shape[0] for s in seqs), default=0)
    dtype = seqs[0].dtype if seqs else torch.long
    padded = torch.zeros(len(seqs), length, dtype=dtype, device=device)
    mask = torch.zeros(len(seqs), length, dtype=torch.bool, device=device)
    for i, s in enumerate(seqs):
        padded[i, : s.shape[0]] = s.to(device)
        mask[i, : s.shape[0]] = True
    return padded, mask
