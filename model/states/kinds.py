"""The kinds of the family by name: decode any state blob (formats 1-3) to its state."""

from __future__ import annotations

from collections.abc import Callable

from model.states.base import UserState
from model.states.blob import Blob, decode_blob
from model.states.elastic import ElasticState
from model.states.linear import LinearState
from model.states.mean import MeanState
from model.states.svd.state import LowRankState

__all__ = ["decode_user_state"]

_FROM_BLOB: dict[str, Callable[[Blob], UserState]] = {
    "svd": LowRankState.from_blob,
    "elastic": ElasticState.from_blob,
    "linear": LinearState.from_blob,
    "mean": MeanState.from_blob,
}


def decode_user_state(blob: bytes) -> UserState:
    """The state a blob holds, of whatever kind.

    Raises:
        StateFormatError: truncated, corrupted, of an unknown version or kind, or non-finite.
    """
    decoded = decode_blob(blob)
    return _FROM_BLOB[decoded.kind](decoded)
