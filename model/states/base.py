"""What every per-user compressed state is (docs/DESIGN.md §2, "compressed-state family").

A state summarises a user's weighted history in a size independent of its length, absorbs a
block of new events in O(1) of that length, and serialises to a versioned, checksummed blob
(``model.states.blob``, one format for every kind). The svd factors with the hybrid's window
of latest events (:class:`model.states.LowRankState`), the ELASTIC dispatcher state, the
FuXi-Linear retention state and the weighted mean all implement :class:`UserState`; the
builders of ``model.states.builders`` create and update them from the events (item rows,
action rows, times) with the model's weights, so callers (the applier, ``/rank``,
``GET /users``, rebuilds, benchmarks) treat every kind alike.

This module also holds what the kinds share: the one decay clock (:class:`Decay`,
:func:`advance`) and the validation of the rows and vectors they absorb (:func:`as_rows`,
:func:`as_vector`; every failure a :class:`StateError` naming what is wrong).

Times are unix seconds; the reference time t_ref is the latest event time seen, and every
weight is exp(-(t_ref - t_j)/τ) (1 without decay), as in training (``model.events.windows``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from model.states.errors import StateError

__all__ = ["Clock", "Decay", "UserState", "advance", "as_rows", "as_vector"]

Array = NDArray[np.float64]


class UserState(Protocol):
    """The common face of a compressed user state (immutable; updates return a new one)."""

    @property
    def kind(self) -> str:
        """``svd``, ``elastic``, ``linear`` or ``mean``."""
        ...

    @property
    def n(self) -> int:
        """Events absorbed."""
        ...

    @property
    def n_eff(self) -> float:
        """Σ w_j seen from t_ref (= n without decay)."""
        ...

    @property
    def t_ref(self) -> float | None:
        """Latest event time absorbed (None: none)."""
        ...

    @property
    def tag(self) -> str:
        """The model (and settings) the state was built with; see ``StateTag``."""
        ...

    @property
    def residual_ratio(self) -> float:
        """Share of the history's energy the state no longer holds (0 for exact states)."""
        ...

    @property
    def token_count(self) -> int:
        """Tokens candidates attend to: svd its rank r, elastic its k dispatcher tokens,
        linear and mean 0 (read as a whole)."""
        ...

    @property
    def singular_values(self) -> Array:
        """svd: the r served σ (r,), descending; (0,) for the other kinds."""
        ...

    @property
    def nbytes(self) -> int:
        """Size of :meth:`to_bytes`."""
        ...

    def to_bytes(self) -> bytes: ...


@dataclass(frozen=True)
class Decay:
    """Exponential recency decay: an event of age a seconds weighs exp(-a / tau).

    ``half_life_s`` is the age at which an event weighs one half; tau = half_life / ln 2.
    """

    half_life_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.half_life_s) and self.half_life_s > 0):
            raise StateError(
                f"half_life_s must be a positive finite number, got {self.half_life_s}"
            )

    @property
    def tau_s(self) -> float:
        return self.half_life_s / math.log(2.0)

    def weights(self, ts: Array, t_ref: float) -> Array:
        """Weights exp(-(t_ref - t)/tau) of events at times ``ts`` (N,) seen from ``t_ref``."""
        return np.exp(-(t_ref - ts) / self.tau_s)


class Clock(NamedTuple):
    """A block's effect on the clock: the new t_ref, the log-factor that ages the old state's
    weights to it (≤ 0), and the block's log weights (b,) seen from it."""

    t_ref: float
    shift: float
    log_w: Array


def advance(t_ref: float | None, ts: Array, decay: Decay | None) -> Clock:
    """Move the reference time to max(t_ref, max ts): old weights age by exp(shift), an event
    at t weighs exp(-(t_new - t)/τ), so events may arrive out of order. No decay: all 1."""
    t_new = float(ts.max()) if t_ref is None else max(t_ref, float(ts.max()))
    if decay is None:
        return Clock(t_new, 0.0, np.zeros(ts.shape[0]))
    shift = 0.0 if t_ref is None else -(t_new - t_ref) / decay.tau_s
    return Clock(t_new, shift, -(t_new - ts) / decay.tau_s)


def as_rows(X: ArrayLike, d: int | None = None) -> Array:
    """Validate and convert rows (numpy or torch) to a float64 (N, d) array, N ≥ 1."""
    if hasattr(X, "detach"):  # torch tensor
        X = X.detach().cpu().numpy()
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise StateError(f"rows must be a 2-D (N, d) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise StateError(f"rows must be non-empty, got shape {arr.shape}")
    if d is not None and arr.shape[1] != d:
        raise StateError(f"rows have dimension {arr.shape[1]}, the state has d={d}")
    if not np.all(np.isfinite(arr)):
        raise StateError("rows contain NaN or infinite values")
    return arr


def as_vector(v: ArrayLike | None, n: int, name: str) -> Array | None:
    """Validate and convert one value per row (n,) to float64; None stays None."""
    if v is None:
        return None
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise StateError(f"{name} has {arr.shape[0]} entries for {n} rows")
    if not np.all(np.isfinite(arr)):
        raise StateError(f"{name} contain NaN or infinite values")
    return arr
