"""Decode any state blob to its kind: versions 1 and 2 are the svd factors, 3 the family."""

from __future__ import annotations

from collections.abc import Callable

from model.lowrank import LowRankState
from model.states.base import UserState
from model.states.blob import FAMILY_VERSION, Blob, blob_version, decode_blob
from model.states.elastic import ElasticState
from model.states.linear import LinearState
from model.states.mean import MeanState

__all__ = ["decode_user_state"]

_FROM_BLOB: dict[str, Callable[[Blob], UserState]] = {
    "elastic": ElasticState.from_blob,
    "linear": LinearState.from_blob,
    "mean": MeanState.from_blob,
}


def decode_user_state(blob: bytes) -> UserState:
    """The state a blob holds, of whatever kind.

    Raises:
        StateFormatError: truncated, corrupted, of an unknown version or kind, or non-finite.
    """
    blob = bytes(blob)
    if blob_version(blob) != FAMILY_VERSION:
        return LowRankState.from_bytes(blob)  # version 1 or 2 (or an unknown one: it says so)
    decoded = decode_blob(blob)
    return _FROM_BLOB[decoded.kind](decoded)
