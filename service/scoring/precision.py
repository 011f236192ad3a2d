"""The compute dtype of the serving pass: bfloat16 only where it keeps scores close to float32.

``choose_dtype`` scores one calibration batch (random candidates, interest tokens made like a
user's factors from random histories, and the same histories for `softmax`) in float32 and in
bfloat16, and keeps bfloat16 when no logit moved by more than ``tolerance`` (1e-2 by default).
``auto`` tries it on CUDA only: CPUs without bf16 GEMM units run it slower than float32.
"""

from __future__ import annotations

import logging
from typing import Literal, NamedTuple

import torch

from model.modes import mode_spec
from model.ranker import Ranker
from model.serving import ServingPass

__all__ = ["BF16_TOLERANCE", "Precision", "choose_dtype", "max_bf16_error"]

logger = logging.getLogger(__name__)

BF16_TOLERANCE = 1e-2  # largest |logit(bf16) - logit(fp32)| accepted
Precision = Literal["auto", "float32", "bfloat16"]


class _Calibration(NamedTuple):
    rows: torch.Tensor  # (B, M) candidate rows
    tokens: torch.Tensor  # (B, r, d) interest tokens
    events: tuple[torch.Tensor, torch.Tensor]  # (B, N) item and action rows
    mask: torch.Tensor  # (B, N)
    log_weights: torch.Tensor  # (B, N)


def _calibration(ranker: Ranker, rank: int, seed: int = 0) -> _Calibration:
    config = ranker.config
    device = ranker.item_emb.weight.device
    gen = torch.Generator().manual_seed(seed)
    B, M, N = 4, 512, 256
    rows = torch.randint(1, config.n_items, (B, M), generator=gen)
    items = torch.randint(1, config.n_items, (B, N), generator=gen)
    actions = torch.randint(0, config.n_actions, (B, N), generator=gen)
    with torch.no_grad():
        x = ranker.embed_events(items.to(device), actions.to(device)).double()  # (B, N, d)
        _, sigma, vt = torch.linalg.svd(x / N**0.5, full_matrices=False)
        tokens = (sigma[:, :rank, None] * vt[:, :rank]).float()  # (B, r, d), like the factors
    mask = torch.ones(B, N, dtype=torch.bool, device=device)
    return _Calibration(
        rows.to(device),
        tokens,
        (items.to(device), actions.to(device)),
        mask,
        torch.zeros(B, N, device=device),
    )


def max_bf16_error(ranker: Ranker, rank: int) -> float:
    """Largest |logit| change from float32 to bfloat16 over the calibration batch (`svd` and
    `softmax`)."""
    batch = _calibration(ranker, rank)
    errors = []
    with torch.inference_mode():
        passes = [ServingPass(ranker, torch.float32), ServingPass(ranker, torch.bfloat16)]
        svd = [p.svd(batch.rows, batch.tokens).clone() for p in passes]
        history = [
            p.history(batch.rows, batch.events, batch.mask, batch.log_weights).clone()
            for p in passes
        ]
        errors = [float((a - b).abs().max()) for a, b in (svd, history)]
    return max(errors)


def choose_dtype(
    ranker: Ranker, rank: int, setting: Precision, tolerance: float = BF16_TOLERANCE
) -> torch.dtype:
    """float32 or bfloat16 for the serving pass, per ``setting``.

    ``float32``: always. ``bfloat16``: when the calibration batch stays within ``tolerance``
    (else float32, with a warning). ``auto``: ``bfloat16`` on CUDA, float32 elsewhere.
    """
    device = ranker.item_emb.weight.device
    if setting == "float32" or (setting == "auto" and device.type != "cuda"):
        return torch.float32
    spec = mode_spec(ranker.config.mode)
    if spec.head is not None or spec.channels != 1:  # calibrated: one-channel attention only
        logger.info("serving in float32: bfloat16 is not calibrated for %s", ranker.config.mode)
        return torch.float32
    error = max_bf16_error(ranker, rank)
    if error <= tolerance:
        logger.info("serving in bfloat16: logits within %.2g of float32", error)
        return torch.bfloat16
    logger.warning("serving in float32: bfloat16 moved logits by %.2g (> %.2g)", error, tolerance)
    return torch.float32
