"""Serving cost of a quality row: µs per request and state bytes per user.

One request = one user (B = 1) scoring M = 2,048 candidates, float32, one thread, measured
on this machine's CPU clock (``time.process_time``: robust to other jobs on shared cores)
as the median of repeats after a warm-up, the per-user state computed beforehand (not timed):

* `svd`: :meth:`ServingPass.svd` on the r interest tokens of ``LowRankState.from_rows``;
* `elastic`: the same pass on the k dispatcher tokens (candidates attend to them with the
  shared attention, exactly as the `elastic` head does);
* `lifelong`: :meth:`ServingPass.channels` on the r tokens and the state's L latest rows;
* `softmax` (and `svd_exact`): :meth:`ServingPass.history` on the last L logged events;
* `linear` / `mean`: :func:`baseline_logits`, the candidate-side work of their heads given
  the precomputed state (S, z per head; the projected mean) followed by the same fused MLP
  tail as the serving pass. Kept here, apart from ``model/``, until these modes are served.

State bytes: `svd` = the serialised factors; `softmax` over L events = L × 20-byte log
records (``service/store/eventlog.py``); `elastic`, `linear` and `mean` = the float32 arrays
such a state keeps (k·H·(d_h+2): running max, normaliser and accumulator per head and
query; H·(d_h² + d_h): S and z per head; d + 1: Σ w x and n_eff) plus the svd blob's header.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.events.interactions import Interactions
from model.events.windows import history_batch
from model.layers import ElasticDispatcher, LinearTargetAttention, elu_feature, log_weights
from model.ranker import HistoryBatch, Ranker
from model.repeats import served_repeat_features
from model.serving import ServingWeights
from model.states import LowRankState, RecentEvents
from model.states.svd.repeats import RepeatCounts

log = logging.getLogger(__name__)
M_CANDIDATES = 2_048
EVENT_BYTES = 20  # one log record (service/store/eventlog.py)
HEADER_BYTES = 51  # the svd state blob's fixed header, ρ and CRC (model/states/blob.py)


class NoServingCost(ValueError):
    """A mode this module has no serving call for (add one to :func:`request`)."""


class Request(NamedTuple):
    """One user's serving call (returns logits (1, M)) and the bytes of the state it reads."""

    logits: Callable[[], Tensor]
    state_bytes: int


class Cost(NamedTuple):
    """Serving cost of one row: microseconds per request and bytes of state per user."""

    us_per_request: float
    state_bytes: int


def median_us(fn: Callable[[], object], budget_s: float, max_repeats: int = 50) -> float:
    """One warm-up call, then the median CPU time (µs) of 3..max_repeats calls in budget_s."""
    start = time.process_time()
    fn()
    first = max(time.process_time() - start, 1e-9)
    times = []
    for _ in range(int(min(max_repeats, max(3, budget_s // first)))):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1e6 * statistics.median(times)


def baseline_logits(w: ServingWeights, rows: Tensor, o: Tensor) -> Tensor:
    """The serving pass's MLP tail: rows (B, M) long, o (B, M, d) attention output → (B, M)."""
    d = w.o.shape[0]
    flat = rows.reshape(-1)
    feats = w.features[flat]  # (B·M, 2d) = [e | W_Q e]
    o_flat = o.reshape(-1, d)
    x = torch.cat((o_flat, feats[:, :d] * o_flat), 1)  # (B·M, 2d) = [o, e ⊙ o]
    hidden = F.gelu(torch.addmm(w.first_share[flat], x, w.fc1))  # onto W1_e e + b1
    second = F.gelu(torch.addmm(w.fc2_bias, hidden, w.fc2))
    return (second @ w.out + w.out_bias).view(rows.shape)


def _linear(ranker: Ranker) -> LinearTargetAttention:
    return cast(LinearTargetAttention, ranker.baselines["linear"].attention)


def linear_state(ranker: Ranker, rows: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """`linear` state of event rows (B, N, d), weights (B, N): S (B, H, d_h, d_h), z (B, H, d_h)."""
    att = _linear(ranker)
    H = att.heads
    B, N, d = rows.shape
    phi_k = elu_feature(att.w_k(rows).view(B, N, H, d // H).transpose(1, 2))  # (B, H, N, d_h)
    phi_k = phi_k * weights[:, None, :, None]
    v = att.w_v(rows).view(B, N, H, d // H).transpose(1, 2)  # (B, H, N, d_h)
    return phi_k.transpose(-1, -2) @ v, phi_k.sum(-2)


def linear_output(ranker: Ranker, cand: Tensor, state: tuple[Tensor, Tensor]) -> Tensor:
    """Candidates (B, M, d) read a linear state → o (B, M, d) (as LinearTargetAttention)."""
    att = _linear(ranker)
    S, z = state
    B, M, d = cand.shape
    H = att.heads
    phi_q = elu_feature(att.w_q(cand).view(B, M, H, d // H).transpose(1, 2))  # (B, H, M, d_h)
    denom = (phi_q * z[:, :, None, :]).sum(-1, keepdim=True).clamp_min(1e-6)  # (B, H, M, 1)
    return att.w_o(((phi_q @ S) / denom).transpose(1, 2).reshape(B, M, d))


def _history(data: Interactions, user: int, length: int) -> HistoryBatch:
    users = np.array([user], dtype=np.int64)
    return history_batch(data, users, data.offsets[users + 1], length)


def _window(hist: HistoryBatch, k: int) -> RecentEvents:
    """The state's window of the k latest events of the history (1, N)."""
    n = hist.items.shape[1]
    return RecentEvents.empty(k).merged(
        hist.items[0].numpy(), hist.actions[0].numpy(), np.arange(n, dtype=np.float64)
    )


def _lifelong(
    ranker: Ranker, state: LowRankState, hist: HistoryBatch, x: Tensor, rows: Tensor
) -> Request:
    """`lifelong`'s call: the r tokens and the L latest rows (x (1, N, d)), both kept in the
    state, in two channels; with item counts, the candidates' repeat features read from them
    inside the call (as ``Mode.request`` does per request)."""
    r, L, K = ranker.config.rank, ranker.config.recent_tokens, ranker.config.repeat_buckets
    tokens = torch.as_tensor(state.interests(r), dtype=torch.float32)[None]  # (1, r, d)
    recent = x[:, -L:].float()  # (1, L', d)
    state = dataclasses.replace(state, recent=_window(hist, L))
    if K:
        counted = hist.items[0][hist.mask[0]].numpy()
        state = dataclasses.replace(state, repeats=RepeatCounts.empty(K).merged(counted, None))
    counts = None if state.repeats is None else state.repeats.counts
    t_mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    r_mask = torch.ones(recent.shape[:2], dtype=torch.bool)
    serving = ranker.serving_pass()

    def call() -> Tensor:
        extra = None if counts is None else served_repeat_features(rows[0], counts)[None]
        return serving.channels(rows, tokens, t_mask, recent, r_mask, extra)

    return Request(call, len(state.to_bytes()))


def _summary(ranker: Ranker, mode: str, hist: HistoryBatch, x: Tensor, rows: Tensor) -> Request:
    """The call of a summary baseline (`linear`, `mean`) from event rows x (1, N, d)."""
    cfg = ranker.config
    d, H = cfg.dim, cfg.heads
    w = ranker.serving_pass().weights
    if mode == "linear":
        lstate = linear_state(ranker, x, hist.weights * hist.mask)

        def linear_call() -> Tensor:
            cand = w.features[rows][..., :d]  # (1, M, d) item embeddings
            return baseline_logits(w, rows, linear_output(ranker, cand, lstate))

        return Request(linear_call, HEADER_BYTES + 4 * H * ((d // H) ** 2 + d // H))
    if mode == "mean":
        m = hist.mask[..., None].float()  # the state: Σ x and n (no decay here)
        pooled = cast(nn.Linear, ranker.baselines["mean"].proj)((x * m).sum(1) / m.sum(1))  # (1, d)
        o = pooled[:, None, :].expand(1, rows.shape[1], d)  # (1, M, d)
        return Request(lambda: baseline_logits(w, rows, o), HEADER_BYTES + 4 * (d + 1))
    raise NoServingCost(f"no serving call for mode {mode!r} in bench/quality/cost.py")


def request(ranker: Ranker, mode: str, hist: HistoryBatch, rows: Tensor) -> Request:
    """The serving call of ``mode`` for one user's history (1, N) and candidates (1, M), its
    per-user state computed here (not part of the call)."""
    cfg = ranker.config
    d, H, r = cfg.dim, cfg.heads, cfg.rank
    serving = ranker.serving_pass()
    x = ranker.embed_events(hist.items, hist.actions)  # (1, N, d)
    if mode in ("svd", "svd_exact", "lifelong"):
        state = LowRankState.from_rows(x[0].double().numpy(), r)
    if mode == "lifelong":
        return _lifelong(ranker, state, hist, x, rows)
    if mode == "svd":
        tokens = torch.as_tensor(state.interests(r), dtype=torch.float32)[None]  # (1, r, d)
        k = cfg.recent_tokens
        if k:  # the hybrid: the k latest event rows join the tokens, kept in the state
            tokens = torch.cat((tokens, x[:, -k:].float()), dim=1)  # (1, r + k, d)
            state = dataclasses.replace(state, recent=_window(hist, k))
        return Request(lambda: serving.svd(rows, tokens), len(state.to_bytes()))
    if mode == "elastic":
        tokens = cast(ElasticDispatcher, ranker.baselines["elastic"].dispatcher)(
            x, hist.mask, None
        )  # (1, k, d)
        size = HEADER_BYTES + 4 * tokens.shape[1] * H * (d // H + 2)
        return Request(lambda: serving.svd(rows, tokens), size)
    if mode in ("softmax", "svd_exact"):
        events, mask = (hist.items, hist.actions), hist.mask
        log_w = log_weights(hist.weights)  # (1, N)
        basis = None
        if mode == "svd_exact":
            basis = torch.as_tensor(state.V[:, :r], dtype=torch.float32)[None]  # (1, d, r)
        size = EVENT_BYTES * int(mask.sum())
        return Request(lambda: serving.history(rows, events, mask, log_w, basis), size)
    return _summary(ranker, mode, hist, x, rows)


@torch.inference_mode()
def serving_cost(
    ranker: Ranker, mode: str, data: Interactions, context: int, budget_s: float = 0.3
) -> Cost:
    """Cost of serving ``mode`` to the dataset's longest-history user on ``context`` events
    (M_CANDIDATES random candidates)."""
    hist = _history(data, int(data.lengths.argmax()), context)  # (1, N) the last events
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(1, ranker.config.n_items, (1, M_CANDIDATES), generator=g)  # (1, M)
    try:
        call = request(ranker, mode, hist, rows)
    except NoServingCost as exc:  # the row's quality still counts; its cost shows as n/a
        log.warning("%s", exc)
        return Cost(math.nan, 0)
    return Cost(median_us(call.logits, budget_s), call.state_bytes)
