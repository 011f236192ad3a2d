"""What a mode reads of one user to build its serving input (``Mode.request``).

The service adapts its loaded user (state, event log, model) to :class:`UserSource`; offline
callers and tests use :class:`UserArrays` over values at hand. What the pass reads of a state
is the state builder's (``model.states.StateBuilder.features`` and ``basis``), so every kind
is read alike. Each mode calls only what it needs, so a mode that does not read the log never
decodes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["LoggedEvents", "UserArrays", "UserSource"]

Array = NDArray[np.float64]


class LoggedEvents(NamedTuple):
    """A user's logged events, oldest first: item and action rows (N,) int64 and recency
    weights (N,) in (0, 1] relative to the latest event (all 1 without decay)."""

    items: NDArray[np.int64]
    actions: NDArray[np.int64]
    weights: NDArray[np.floating]


class UserSource(Protocol):
    """One user as a mode's input builder reads it."""

    def features(self) -> Array:
        """What the scoring pass reads of the user's state (``StateBuilder.features``: svd
        its live interest tokens and the hybrid's latest rows, elastic its k tokens, linear
        and mean their summaries; the empty state's for a user with no history)."""
        ...

    def basis(self) -> Array:
        """(d, r) V_r of the user's svd factors (zeros for a user with no history)."""
        ...

    def tokens(self) -> Array:
        """What `svd` attends to (``StateBuilder.tokens``): the svd features, also of a
        `lifelong` state (served through a read-out)."""
        ...

    def events(self) -> LoggedEvents:
        """The user's whole event log as rows and recency weights."""
        ...


@dataclass(frozen=True)
class UserArrays:
    """A :class:`UserSource` over arrays already at hand (e.g. a builder's ``features`` and
    ``basis`` of a state); reading one that was not given is a ValueError naming it.
    ``state_tokens`` defaults to the features (the same rows for every kind but lifelong)."""

    state_features: Array | None = None
    state_basis: Array | None = None
    logged: LoggedEvents | None = None
    state_tokens: Array | None = None

    def features(self) -> Array:
        if self.state_features is None:
            raise ValueError("this user has no state features")
        return self.state_features

    def basis(self) -> Array:
        if self.state_basis is None:
            raise ValueError("this user has no svd basis")
        return self.state_basis

    def tokens(self) -> Array:
        return self.features() if self.state_tokens is None else self.state_tokens

    def events(self) -> LoggedEvents:
        if self.logged is None:
            raise ValueError("this user has no event log")
        return self.logged
