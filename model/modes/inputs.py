"""What a mode reads of one user to build its serving input (``Mode.request``).

The service adapts its loaded user (state, event log, model) to :class:`UserSource`; offline
callers and tests use :class:`UserArrays` over values at hand. Each mode calls only what it
needs, so a mode that does not read the log never decodes it. The svd factors are read through
their public face (:class:`SvdFactors`: ``model.lowrank.LowRankState`` has it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["LoggedEvents", "RecentRows", "SvdFactors", "UserArrays", "UserSource"]

Array = NDArray[np.float64]
Rows = NDArray[np.int64]


class LoggedEvents(NamedTuple):
    """A user's logged events, oldest first: item and action rows (N,) int64 and recency
    weights (N,) in (0, 1] relative to the latest event (all 1 without decay)."""

    items: Rows
    actions: Rows
    weights: NDArray[np.floating]


class RecentRows(Protocol):
    """The `svd` hybrid's window of latest events: item and action rows (k',) int64."""

    @property
    def items(self) -> Rows: ...

    @property
    def actions(self) -> Rows: ...

    def __len__(self) -> int: ...


class SvdFactors(Protocol):
    """What the svd modes read of a user's factors."""

    @property
    def V(self) -> Array:
        """(d, ℓ) right singular vectors."""
        ...

    @property
    def recent(self) -> RecentRows | None:
        """The hybrid's latest events (None for a plain svd state)."""
        ...

    def interests(self, r: int | None = None) -> Array:
        """(r, d) interest tokens, descending σ."""
        ...

    def live_rank(self, r: int | None = None) -> int:
        """How many of the first r tokens are live (σ_k > 1e-6·σ_1)."""
        ...


class UserSource(Protocol):
    """One user as a mode's input builder reads it.

    Attributes:
        rank: served r. dim: embedding size d.
    """

    @property
    def rank(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def factors(self) -> SvdFactors | None:
        """The user's svd factors (None: no history)."""
        ...

    def features(self) -> Array:
        """What the scoring pass reads of the user's state (``StateBuilder.features``; the
        empty state's for a user with no history)."""
        ...

    def events(self) -> LoggedEvents:
        """The user's whole event log as rows and recency weights."""
        ...

    def embed(self, items: Rows, actions: Rows) -> Array:
        """Event rows x_j = E_item[i_j] + E_action[a_j]: (k,) rows → (k, d)."""
        ...


@dataclass(frozen=True)
class UserArrays:
    """A :class:`UserSource` over values already at hand; reading one that was not given is
    a ValueError naming it.

    Attributes:
        rank, dim: served r and d.
        embedder: (k,) item rows, (k,) action rows → (k, d) event rows (e.g. the ranker's).
        state_factors / state_features / logged: what :meth:`factors`, :meth:`features` and
            :meth:`events` return.
    """

    rank: int
    dim: int
    embedder: Callable[[Rows, Rows], Array] | None = None
    state_factors: SvdFactors | None = None
    state_features: Array | None = None
    logged: LoggedEvents | None = None

    def factors(self) -> SvdFactors | None:
        return self.state_factors

    def features(self) -> Array:
        if self.state_features is None:
            raise ValueError("this user has no state features")
        return self.state_features

    def events(self) -> LoggedEvents:
        if self.logged is None:
            raise ValueError("this user has no event log")
        return self.logged

    def embed(self, items: Rows, actions: Rows) -> Array:
        if self.embedder is None:
            raise ValueError("this user has no embedder for its events")
        return self.embedder(items, actions)
