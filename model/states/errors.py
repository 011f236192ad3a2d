"""The errors of the user-state family: one hierarchy for every kind (svd factors included)."""

from __future__ import annotations

__all__ = ["StateError", "StateFormatError"]


class StateError(ValueError):
    """Invalid input to a state operation: a row's shape or finiteness, a rank, a weight, a
    decay, a window's capacity, or a state of another kind or shape than its builder's."""


class StateFormatError(StateError):
    """A serialized state blob is truncated, corrupted, or of an unknown version or kind."""
