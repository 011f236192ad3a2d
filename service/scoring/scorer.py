"""The batch side of /rank: score a micro-batch of requests in one ranker pass per mode.

:class:`BatchScorer` is the micro-batcher's handler: it runs in a worker thread under
``torch.inference_mode``, groups the batch by mode and splits each group so that its tensors
stay bounded. Per pass it packs every input of the group into one host buffer, moves it to
the device in one copy (``staging``), runs the fused pass (``model.serving``), takes the top k
of every request on the device in one ``torch.topk`` over the padded logits, and brings the
positions and logits back in one wait. Results come back in input order as numpy arrays.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from model.config import SERVING_MODES, STATE_MODES
from model.ranker import Ranker, RankerInputError, ScoreRequest
from model.serving import ServingPass
from service.scoring.staging import Packed, Staging

__all__ = ["SVD_PASS_ROWS", "BatchScorer", "RankJob", "Ranked", "split_jobs"]

# Modes whose context is a few tokens or a constant-size summary, not the N events.
_TOKEN_MODES = ("svd", *STATE_MODES)
# Candidate rows per `svd` pass (and per pass of the state modes). Past ~8k rows (4 requests
# of M=2,048) the MLP's activations leave the CPU caches and a request costs ~20% more CPU
# than in a smaller pass (measured: 3.0 ms per request at B ≤ 4, 3.5 ms at B = 8, one thread).
SVD_PASS_ROWS = 8_192


@dataclass(frozen=True)
class RankJob:
    """One request for the batched pass: mode, ranker input and how many results to keep."""

    mode: str
    request: ScoreRequest
    top_k: int


class Ranked(NamedTuple):
    """Top-k of one request, best first: candidate positions (k,) int64, logits (k,) float32."""

    positions: np.ndarray
    scores: np.ndarray


def _history_size(job: RankJob) -> int:
    items = job.request.history_items
    return max(1, 0 if items is None else int(items.shape[0]))


def split_jobs(jobs: Sequence[RankJob], idxs: list[int], max_elements: int) -> list[list[int]]:
    """Split the jobs ``idxs`` into passes whose B·M_max·N_max stays under ``max_elements``
    (N = 1 for `svd` jobs, whose context is r tokens, so there it bounds B·M_max)."""
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


def _fill(target: np.ndarray, values: Sequence[Tensor | None]) -> None:
    """Zero ``target`` (B, L, ...) and copy each (L_i, ...) value into its row."""
    target[...] = 0
    for row, value in zip(target, values, strict=True):
        if value is not None:
            row[: value.shape[0]] = value.numpy()


class BatchScorer:
    """Top-k positions and logits for every job of a batch, grouped by mode.

    Args:
        ranker: the loaded ranker (eval mode, on its device).
        history_batch_elements: most B·M·N of one `svd_exact`/`softmax` pass.
        dtype: compute dtype of the pass (bfloat16 only where it was checked to keep scores
            close, see ``service.scoring.precision``); logits are compared in float32.
    """

    def __init__(
        self, ranker: Ranker, history_batch_elements: int, dtype: torch.dtype = torch.float32
    ) -> None:
        self.ranker = ranker
        self.history_batch_elements = history_batch_elements
        self.serving = ServingPass(ranker, dtype)
        self._local = threading.local()

    @property
    def device(self) -> torch.device:
        return self.serving.device

    def _staging(self) -> Staging:
        staging: Staging | None = getattr(self._local, "staging", None)
        if staging is None or staging.device != self.device:
            staging = self._local.staging = Staging(self.device)
        return staging

    def __call__(self, jobs: Sequence[RankJob]) -> list[Ranked]:
        by_mode: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_mode.setdefault(job.mode, []).append(i)
        results: dict[int, Ranked] = {}
        with torch.inference_mode():
            for mode, idxs in by_mode.items():
                limit = SVD_PASS_ROWS if mode in _TOKEN_MODES else self.history_batch_elements
                for group in split_jobs(jobs, idxs, limit):
                    ranked = self._score(mode, [jobs[i] for i in group])
                    results.update(zip(group, ranked, strict=True))
        return [results[i] for i in range(len(jobs))]

    def _score(self, mode: str, jobs: Sequence[RankJob]) -> list[Ranked]:
        """One pass over ``jobs`` of one mode, top k on the device."""
        inputs = self.send(mode, jobs)
        return self.top_k(self.logits(mode, inputs), inputs, jobs)

    def send(self, mode: str, jobs: Sequence[RankJob]) -> dict[str, Tensor]:
        """Every input of the pass packed on the host and moved to the device in one copy."""
        requests = [job.request for job in jobs]
        staging = self._staging()
        if mode in ("svd", "elastic"):
            return self._pack_svd(staging, requests).send()
        if mode in STATE_MODES:
            return self._pack_state(staging, requests).send()
        return self._pack_history(staging, mode, requests).send()

    def logits(self, mode: str, inputs: dict[str, Tensor]) -> Tensor:
        """(B, M) float32 logits of the fused pass (a view into its workspace)."""
        if mode in ("svd", "elastic"):  # r interest tokens or k dispatcher tokens
            return self.serving.svd(inputs["rows"], inputs["tokens"], inputs.get("token_mask"))
        if mode in STATE_MODES:
            return self.serving.state(mode, inputs["rows"], inputs["summary"])
        log_weights = torch.log(inputs["weights"].clamp_min(1e-30))
        return self.serving.history(
            mode, inputs["rows"], (inputs["items"], inputs["actions"]), inputs["mask"],
            log_weights, inputs.get("basis"),
        )  # fmt: skip

    def top_k(self, logits: Tensor, inputs: dict[str, Tensor], jobs: Sequence[RankJob]
              ) -> list[Ranked]:  # fmt: skip
        """One ``torch.topk`` over the padded logits (padding at -inf), one wait for both."""
        lengths = [int(job.request.candidates.shape[0]) for job in jobs]
        ks = [min(job.top_k, m) for job, m in zip(jobs, lengths, strict=True)]
        if min(lengths) < logits.shape[1]:  # requests of several sizes: padding sorts last
            padded = (
                torch.arange(logits.shape[1], device=logits.device) >= inputs["lengths"][:, None]
            )
            logits = logits.masked_fill_(padded, -torch.inf)
        values, positions = torch.topk(logits, max(ks), dim=1)
        scores, order = self._staging().to_host([values, positions])
        return [Ranked(order[i, :k], scores[i, :k]) for i, k in enumerate(ks)]

    def _pack_svd(self, staging: Staging, requests: Sequence[ScoreRequest]) -> Packed:
        d = self.ranker.config.dim
        for req in requests:
            if req.interests is None or req.interests.dim() != 2 or req.interests.shape[1] != d:
                raise RankerInputError(f"svd and elastic need (r, {d}) interests per request")
        ranks = [int(req.interests.shape[0]) for req in requests if req.interests is not None]
        B, M, r = len(requests), max(int(q.candidates.shape[0]) for q in requests), max(ranks)
        layout: list[tuple[str, tuple[int, ...], type]] = [
            ("rows", (B, M), np.int64), ("lengths", (B,), np.int64),
            ("tokens", (B, r, d), np.float32),
        ]  # fmt: skip
        if min(ranks) < r:  # requests of several ranks: mask the padding tokens
            layout.append(("token_mask", (B, r), np.bool_))
        packed = staging.pack(layout)
        host = packed.host
        _fill(host["rows"], [q.candidates for q in requests])
        host["lengths"][:] = [q.candidates.shape[0] for q in requests]
        _fill(host["tokens"], [q.interests.float() for q in requests if q.interests is not None])
        if "token_mask" in host:
            host["token_mask"][:] = np.arange(r)[None, :] < np.asarray(ranks)[:, None]
        return packed

    def _pack_state(self, staging: Staging, requests: Sequence[ScoreRequest]) -> Packed:
        """`linear` / `mean`: candidate rows and one state summary (same shape) per request."""
        summaries = [req.summary for req in requests]
        if (
            any(s is None for s in summaries)
            or len({tuple(s.shape) for s in summaries if s is not None}) != 1
        ):
            raise RankerInputError("linear and mean need one summary of one shape per request")
        shape = tuple(int(n) for n in summaries[0].shape) if summaries[0] is not None else ()
        B, M = len(requests), max(int(q.candidates.shape[0]) for q in requests)
        packed = staging.pack(
            [("rows", (B, M), np.int64), ("lengths", (B,), np.int64),
             ("summary", (B, *shape), np.float32)]
        )  # fmt: skip
        host = packed.host
        _fill(host["rows"], [q.candidates for q in requests])
        host["lengths"][:] = [q.candidates.shape[0] for q in requests]
        for row, summary in zip(host["summary"], summaries, strict=True):
            assert summary is not None
            row[...] = summary.float().numpy()
        return packed

    def _pack_history(
        self, staging: Staging, mode: str, requests: Sequence[ScoreRequest]
    ) -> Packed:
        d = self.ranker.config.dim
        if mode == "svd_exact" and any(req.basis is None for req in requests):
            raise RankerInputError("svd_exact mode needs a (d, r) basis per request")
        sizes = [0 if q.history_items is None else int(q.history_items.shape[0]) for q in requests]
        B, M, N = len(requests), max(int(q.candidates.shape[0]) for q in requests), max(sizes)
        layout: list[tuple[str, tuple[int, ...], type]] = [
            ("rows", (B, M), np.int64), ("lengths", (B,), np.int64),
            ("items", (B, N), np.int64), ("actions", (B, N), np.int64),
            ("weights", (B, N), np.float32), ("mask", (B, N), np.bool_),
        ]  # fmt: skip
        r = 0
        if mode == "svd_exact":
            r = max(int(q.basis.shape[1]) for q in requests if q.basis is not None)
            layout.append(("basis", (B, d, r), np.float32))
        packed = staging.pack(layout)
        host = packed.host
        _fill(host["rows"], [q.candidates for q in requests])
        host["lengths"][:] = [q.candidates.shape[0] for q in requests]
        _fill(host["items"], [q.history_items for q in requests])
        _fill(host["actions"], [q.history_actions for q in requests])
        host["weights"][...] = 1.0
        for row, q, n in zip(host["weights"], requests, sizes, strict=True):
            if q.weights is not None:
                row[:n] = q.weights.float().numpy()
        host["mask"][:] = np.arange(N)[None, :] < np.asarray(sizes)[:, None]
        if mode == "svd_exact":
            host["basis"][...] = 0
            for row, q in zip(host["basis"], requests, strict=True):
                assert q.basis is not None
                row[:, : q.basis.shape[1]] = q.basis.float().numpy()
        return packed

    def warm_up(self, rank: int, modes: Sequence[str] = SERVING_MODES) -> None:
        """Score one small request per served mode so the first real request pays no lazy
        set-up (``rank``: the served r; ``modes``: the modes the model serves)."""
        config = self.ranker.config
        d, dh = config.dim, config.dim // config.heads
        n = min(8, config.n_items)
        candidates = torch.arange(n, dtype=torch.long)  # (n,)
        history = torch.arange(n, dtype=torch.long)  # (n,)
        requests = {
            "svd": ScoreRequest(candidates, interests=torch.randn(rank, d)),
            "svd_exact": ScoreRequest(
                candidates, history_items=history, basis=torch.eye(d)[:, :rank]
            ),
            "softmax": ScoreRequest(candidates, history_items=history),
            "elastic": ScoreRequest(candidates, interests=torch.randn(config.elastic_tokens, d)),
            "linear": ScoreRequest(candidates, summary=torch.rand(config.heads, dh, dh + 1)),
            "mean": ScoreRequest(candidates, summary=torch.randn(d)),
        }
        self([RankJob(mode, requests[mode], n) for mode in modes])
