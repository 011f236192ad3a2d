"""Padding a batch of requests into named arrays: what every mode's ``pack`` writes into.

A mode lays out its arrays (name, shape, dtype) in a :class:`Buffers`, fills the host views
in place and ``send``s them to the device. The service's buffers are
``service.scoring.staging.Staging`` (one pinned host buffer, one copy for the whole batch);
:class:`HostBuffers` is the plain version for the reference path and offline scoring. Both
receive the same arrays from the same packing code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Buffers",
    "HostBuffers",
    "Layout",
    "PackedBatch",
    "candidate_layout",
    "fill",
    "fill_candidates",
]

# (name, shape, dtype) of each array of a batch: int64, float32 or bool.
Layout = list[tuple[str, tuple[int, ...], type]]


class PackedBatch(Protocol):
    """Host views of one batch's arrays (``host``, filled by the packer), then ``send``."""

    host: dict[str, np.ndarray]

    def send(self) -> dict[str, Tensor]:
        """The arrays on the device, by name."""
        ...


class Buffers(Protocol):
    """Where a batch is laid out (``Staging`` in the service, :class:`HostBuffers` here)."""

    def pack(self, arrays: Layout) -> PackedBatch: ...


class _HostBatch:
    def __init__(self, arrays: Layout, device: torch.device) -> None:
        self.device = device
        self.host: dict[str, np.ndarray] = {
            name: np.empty(shape, dtype=dtype) for name, shape, dtype in arrays
        }

    def send(self) -> dict[str, Tensor]:
        return {name: torch.from_numpy(a).to(self.device) for name, a in self.host.items()}


class HostBuffers:
    """Fresh numpy arrays per batch, each copied to ``device`` on its own."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def pack(self, arrays: Layout) -> PackedBatch:
        return _HostBatch(arrays, self.device)


def candidate_layout(candidates: Sequence[Tensor]) -> Layout:
    """The arrays every batch has: ``rows`` (B, M_max) candidate rows, padded with row 0,
    and ``lengths`` (B,) the real M of each request."""
    B, M = len(candidates), max(int(c.shape[0]) for c in candidates)
    return [("rows", (B, M), np.int64), ("lengths", (B,), np.int64)]


def fill_candidates(host: dict[str, np.ndarray], candidates: Sequence[Tensor]) -> None:
    """Write ``rows`` and ``lengths`` (see :func:`candidate_layout`)."""
    fill(host["rows"], candidates)
    host["lengths"][:] = [c.shape[0] for c in candidates]


def fill(target: np.ndarray, values: Sequence[Tensor | None]) -> None:
    """Zero ``target`` (B, L, ...) and copy each (L_i, ...) value into its row (None: zeros)."""
    target[...] = 0
    for row, value in zip(target, values, strict=True):
        if value is not None:
            row[: value.shape[0]] = value.numpy(force=True)
