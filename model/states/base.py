"""What every per-user compressed state is (DESIGN §2, "compressed-state family").

A state summarises a user's weighted history in a size independent of its length, absorbs a
block of new events in O(1) of that length, and serialises to a versioned, checksummed blob.
The svd factors (:class:`model.lowrank.LowRankState`), the ELASTIC dispatcher state, the
FuXi-Linear retention state and the weighted mean all implement :class:`UserState`; the
builders of ``model.states.builders`` create and update them with the model's weights, so
callers (the applier, ``/rank``, ``GET /users``, rebuilds, benchmarks) treat every kind alike.

Times are unix seconds; the reference time t_ref is the latest event time seen, and every
weight is exp(-(t_ref - t_j)/τ) (1 without decay), as in training (``model.events.windows``).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from model.lowrank import Decay

__all__ = ["Clock", "UserState", "advance"]

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
    def nbytes(self) -> int:
        """Size of :meth:`to_bytes`."""
        ...

    def to_bytes(self) -> bytes: ...


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
