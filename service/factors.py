"""Per-user factor maintenance: parse a stored state, append events, rebuild from the log.

Pure, synchronous functions (numpy/torch compute): callers run them off the event loop.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from model.lowrank import LowRankState, StateFormatError
from service.runtime import ServingModel

__all__ = ["ParsedState", "append_rows", "batch_state", "parse_state", "rebuild_from_log"]


class ParsedState(NamedTuple):
    """A stored state and, when it cannot be used as is, why it must be rebuilt.

    ``rebuild`` is None (usable), ``"model_version"`` (written under another model),
    ``"config"`` (another rank, ℓ, d or half-life), ``"corrupt"`` (unreadable blob, ``state``
    None) or ``"missing"`` (no blob but an event log: the state key alone was lost).
    """

    state: LowRankState | None
    rebuild: str | None


def parse_state(
    blob: bytes | None, model: ServingModel, *, log_present: bool = False
) -> ParsedState:
    """Decode a state blob (None: no state) and check it against the model.

    ``log_present``: the user has event-log records. Without a blob, that means the history
    must be rebuilt from the log, never restarted from nothing (which would lose it silently).
    """
    if blob is None:
        return ParsedState(None, "missing" if log_present else None)
    try:
        state = LowRankState.from_bytes(blob)
    except StateFormatError:
        return ParsedState(None, "corrupt")
    if state.model_version != model.state_tag:
        written_by = state.model_version.split("@", 1)[0]
        return ParsedState(state, "model_version" if written_by != model.version else "config")
    if (state.rank, state.ell, state.d) != (model.rank, model.ell, model.dim):
        return ParsedState(state, "config")
    return ParsedState(state, None)


def empty_state(model: ServingModel) -> LowRankState:
    return LowRankState.empty(model.dim, model.rank, model.oversample, model.state_tag)


def batch_state(rows: np.ndarray, ts: np.ndarray, model: ServingModel) -> LowRankState:
    """The batch factors of rows (N, d) at times ts (N,), with the model's rank, oversampling,
    decay and version: ``LowRankState.from_rows``, O(N·d²)."""
    return LowRankState.from_rows(
        rows,
        model.rank,
        oversample=model.oversample,
        ts=ts,
        decay=model.decay,
        model_version=model.state_tag,
    )


def rebuild_from_log(records: np.ndarray, model: ServingModel) -> LowRankState:
    """Factors of a decoded event log (structured ``EVENT_DTYPE`` records, oldest first)."""
    if records.shape[0] == 0:
        return empty_state(model)
    items, actions = model.log_rows(records)
    rows = model.embed(items, actions)  # (N, d)
    return batch_state(rows, np.asarray(records["ts"], dtype=np.float64), model)


def append_rows(
    state: LowRankState | None, rows: np.ndarray, ts: np.ndarray, model: ServingModel
) -> LowRankState:
    """One Brand block update of ``state`` (None: a new user) with rows (b, d) at times ts."""
    base = state if state is not None else empty_state(model)
    return base.append(rows, ts=ts, decay=model.decay)
