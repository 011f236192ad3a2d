"""The batch side of /rank: score a micro-batch of requests in one ranker pass per mode.

:class:`BatchScorer` serves the micro-batcher: ``passes`` groups a batch by mode and splits
each group so that its tensors stay bounded (the batcher's ``split``), and ``score_pass``
scores one such pass in the worker thread under ``torch.inference_mode`` (its handler). Per
pass the mode's registry entry (``model.modes``) packs every input of the group into one host
buffer, which moves to the device in one copy (``staging``), and runs its fused pass
(``model.serving``); the top k of every request is taken on the device in one
``torch.topk`` over the padded logits, and the positions and logits come back in one wait.
Results come back in input order as numpy arrays.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from model.modes import SERVING_MODES, Mode, ScoreRequest, mode_spec
from model.modes.packing import TOKEN_BUCKET, bucket
from model.ranker import Ranker
from model.serving import ServingPass
from service.metrics import Metrics
from service.scoring.staging import Staging
from service.settings import SVD_PASS_ROWS

__all__ = ["SVD_PASS_ROWS", "BatchScorer", "RankJob", "Ranked", "split_jobs"]


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


class BatchScorer:
    """Top-k positions and logits for every job of a batch, grouped by mode.

    Args:
        ranker: the loaded ranker (eval mode, on its device).
        history_batch_elements: most B·M·N of one pass of a mode that reads the log
            (`svd_exact`, `softmax`).
        dtype: compute dtype of the pass (bfloat16 only where it was checked to keep scores
            close, see ``service.scoring.precision``); logits are compared in float32.
        pass_rows: most candidate rows of one pass of a mode that does not read the log (a
            request with more gets a pass of its own).
        metrics: records each pass's time by whether its padded shape was new to the process
            (a shape's first call pays the kernels' set-up: the evidence for warm-up), and the
            part of it the thread spent off the CPU (waiting for the GIL or a core).
    """

    def __init__(
        self,
        ranker: Ranker,
        history_batch_elements: int,
        dtype: torch.dtype = torch.float32,
        metrics: Metrics | None = None,
        pass_rows: int = SVD_PASS_ROWS,
    ) -> None:
        if pass_rows < 1:
            raise ValueError(f"pass_rows must be ≥ 1, got {pass_rows}")
        self.ranker = ranker
        self.history_batch_elements = history_batch_elements
        self.pass_rows = pass_rows
        self.serving = ranker.serving_pass(dtype=dtype)  # the trained mode's
        self._metrics = metrics
        self._local = threading.local()
        self.shapes: set[tuple[object, ...]] = set()  # padded shapes passed so far

    @property
    def device(self) -> torch.device:
        return self.serving.device

    def _staging(self) -> Staging:
        staging: Staging | None = getattr(self._local, "staging", None)
        if staging is None or staging.device != self.device:
            staging = self._local.staging = Staging(self.device)
        return staging

    def passes(self, jobs: Sequence[RankJob]) -> list[list[int]]:
        """The passes that score ``jobs``: positions grouped by mode (in order of first
        appearance), each group split to bound its tensors (:func:`split_jobs`). The
        micro-batcher's ``split``: each pass's callers are answered when it is done."""
        by_mode: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_mode.setdefault(job.mode, []).append(i)
        passes: list[list[int]] = []
        for mode, idxs in by_mode.items():
            limit = self.history_batch_elements if mode_spec(mode).reads_log else self.pass_rows
            passes += split_jobs(jobs, idxs, limit)
        return passes

    def __call__(self, jobs: Sequence[RankJob]) -> list[Ranked]:
        """Every job of a batch, pass by pass (:meth:`passes`), in input order."""
        results: dict[int, Ranked] = {}
        for group in self.passes(jobs):
            results.update(zip(group, self.score_pass([jobs[i] for i in group]), strict=True))
        return [results[i] for i in range(len(jobs))]

    def score_pass(self, jobs: Sequence[RankJob]) -> list[Ranked]:
        """One pass: ``jobs`` are one part of :meth:`passes` (one mode, within its bounds).
        The micro-batcher's handler, which has split the batch already."""
        mode = jobs[0].mode
        if any(job.mode != mode for job in jobs):
            raise ValueError("one pass scores jobs of one mode (split with BatchScorer.passes)")
        with torch.inference_mode():
            return self._score(mode_spec(mode), jobs)

    def _score(self, spec: Mode, jobs: Sequence[RankJob]) -> list[Ranked]:
        """One pass over ``jobs`` of one mode, top k on the device."""
        start, start_cpu = time.perf_counter(), time.thread_time()
        inputs = self._send(spec, jobs)
        shape = (spec.name, *((name, *t.shape) for name, t in sorted(inputs.items())))
        new = shape not in self.shapes
        self.shapes.add(shape)
        ranked = self.top_k(spec.score(self._pass(spec.name), inputs), inputs, jobs)
        if self._metrics is not None:
            wall_s, cpu_s = time.perf_counter() - start, time.thread_time() - start_cpu
            self._metrics.pass_seconds.labels(shape="new" if new else "seen").observe(wall_s)
            # Off the CPU: waiting for the GIL or for a core (see Metrics).
            self._metrics.pass_off_cpu_seconds.observe(max(0.0, wall_s - cpu_s))
        return ranked

    def _send(self, spec: Mode, jobs: Sequence[RankJob]) -> dict[str, Tensor]:
        requests = [job.request for job in jobs]
        return spec.pack(requests, self.ranker.config.dim, self._staging()).send()

    def send(self, mode: str, jobs: Sequence[RankJob]) -> dict[str, Tensor]:
        """Every input of the pass packed on the host and moved to the device in one copy."""
        return self._send(mode_spec(mode), jobs)

    def logits(self, mode: str, inputs: dict[str, Tensor]) -> Tensor:
        """(B, M) float32 logits of the mode's fused pass."""
        return mode_spec(mode).score(self._pass(mode), inputs)

    def _pass(self, mode: str) -> ServingPass:
        """The fused pass that scores ``mode`` (``Ranker.serving_pass``: a lifelong model's
        svd family through its read-out)."""
        return self.ranker.serving_pass(mode, self.serving.dtype)

    def top_k(
        self, logits: Tensor, inputs: dict[str, Tensor], jobs: Sequence[RankJob]
    ) -> list[Ranked]:
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

    def warm_up(
        self,
        rank: int,
        modes: Sequence[str] = SERVING_MODES,
        candidates: int = 2_048,
        max_batch: int = 1,
    ) -> None:
        """Score, per served mode, one small request and every bucket shape of a pass of
        requests of ``candidates`` candidates: B = 1…what one pass holds (at most
        ``max_batch``) × each token bucket up to r + the hybrid's rows (``model.modes.packing``),
        so that the first real requests neither grow this thread's buffers nor pay a shape's
        first call. The modes that read the log get the small request only (their shapes
        follow each user's N).

        ``rank``: the served r; ``modes``: the modes the model serves.
        """
        config = self.ranker.config
        small = torch.arange(min(8, config.n_items), dtype=torch.long)  # (8,)
        self([RankJob(mode, mode_spec(mode).example(config, rank, small), 8) for mode in modes])
        full = torch.arange(candidates, dtype=torch.long) % config.n_items  # (M,)
        most = max(1, min(max_batch, self.pass_rows // candidates))
        for mode in modes:
            spec = mode_spec(mode)
            if spec.reads_log:
                continue
            example = spec.example(config, rank, full)
            requests = [example]
            if example.interests is not None:  # a token mode: every token bucket
                top = max(example.interests.shape[0], rank + config.recent_tokens)
                requests = [
                    replace(example, interests=torch.randn(t, config.dim))
                    for t in range(TOKEN_BUCKET, bucket(top, TOKEN_BUCKET) + 1, TOKEN_BUCKET)
                ]
            for request in requests:
                for b in range(1, most + 1):
                    self([RankJob(mode, request, 100)] * b)
