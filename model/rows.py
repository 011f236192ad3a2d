"""Validation of the rows, weights and times a low-rank state absorbs (numpy or torch in,
float64 numpy out); every failure is a :class:`LowRankError` naming what is wrong."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from model.state_blob import LowRankError

__all__ = ["as_rows", "as_vector"]

Array = NDArray[np.float64]


def as_rows(X: ArrayLike, d: int | None = None) -> Array:
    """Validate and convert rows to a float64 (N, d) array."""
    if hasattr(X, "detach"):  # torch tensor
        X = X.detach().cpu().numpy()
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise LowRankError(f"rows must be a 2-D (N, d) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise LowRankError(f"rows must be non-empty, got shape {arr.shape}")
    if d is not None and arr.shape[1] != d:
        raise LowRankError(f"rows have dimension {arr.shape[1]}, the state has d={d}")
    if not np.all(np.isfinite(arr)):
        raise LowRankError("rows contain NaN or infinite values")
    return arr


def as_vector(v: ArrayLike | None, n: int, name: str) -> Array | None:
    if v is None:
        return None
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise LowRankError(f"{name} has {arr.shape[0]} entries for {n} rows")
    if not np.all(np.isfinite(arr)):
        raise LowRankError(f"{name} contain NaN or infinite values")
    return arr
