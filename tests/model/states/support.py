"""Shared helpers of the state tests: a float64 ranker of a baseline mode and random events."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch

from model.config import RankerConfig
from model.ranker import Ranker
from model.states import Decay, LowRankState

DIM, HEADS, TOKENS = 64, 4, 32  # the default sizes (DESIGN §10: state ≤ 16 KB at d=64)


def ranker(
    mode: str, seed: int = 0, dim: int = DIM, heads: int = HEADS, recent_tokens: int = 0
) -> Ranker:
    """A random float64 ranker trained "in" ``mode`` (eval mode), 50 items and 3 actions."""
    torch.manual_seed(seed)
    config = RankerConfig(
        n_items=50,
        n_actions=3,
        dim=dim,
        heads=heads,
        mode=mode,
        elastic_tokens=TOKENS,
        recent_tokens=recent_tokens,
    )
    model = Ranker(config).double().eval()
    with torch.no_grad():
        model.action_emb.weight[1:].normal_(0.0, 0.1)  # row 0, "no action", stays 0
    return model


def event_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item rows (n,) in [1, 50), action rows (n,) in [0, 3) and times (n,) in arbitrary
    order, seconds: the events a builder takes."""
    rng = np.random.default_rng(seed)
    items, actions = rng.integers(1, 50, size=n), rng.integers(0, 3, size=n)
    return items.astype(np.int64), actions.astype(np.int64), rng.uniform(0.0, 5_000.0, size=n)


def events(n: int, seed: int, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """Rows (n, d) and times (n,) in arbitrary (not sorted) order, seconds."""
    rng = np.random.default_rng(seed)
    return rng.normal(scale=0.5, size=(n, dim)), rng.uniform(0.0, 5_000.0, size=n)


def blocks(n: int, seed: int) -> list[np.ndarray]:
    """A random permutation of range(n) cut into random blocks (events out of order)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(6, n - 1), replace=False))
    return [block for block in np.split(order, cuts) if block.size]


def log_weights(ts: np.ndarray, decay: Decay | None) -> torch.Tensor:
    """(1, N) log recency weights seen from the latest event, as training computes them."""
    if decay is None:
        return torch.zeros(1, ts.shape[0], dtype=torch.float64)
    return torch.from_numpy(-(ts.max() - ts) / decay.tau_s)[None]


def legacy_blob(state: LowRankState) -> bytes:
    """``state`` as the release before format 3 wrote it (``model/state_blob.py`` at 683b3d6):
    format 1, or 2 with a window of latest events."""
    tag = state.tag.encode("utf-8")
    d, ell = state.V.shape
    version = 1 if state.recent is None else 2
    header = struct.pack(
        "<4sHHHHHQdddB",
        b"SOLR",
        version,
        d,
        ell,
        state.rank,
        int(state.t_ref is not None),
        state.n,
        state.n_eff,
        0.0 if state.t_ref is None else state.t_ref,
        state.residual,
        len(tag),
    )
    arrays = [state.sigma, state.V.ravel(), state.s]
    body = header + tag + b"".join(a.astype("<f4").tobytes() for a in arrays)
    if state.recent is not None:
        window = state.recent
        body += (
            struct.pack("<HH", window.capacity, len(window))
            + window.items.astype("<i4").tobytes()
            + window.actions.astype("<i4").tobytes()
            + window.ts.astype("<f8").tobytes()
        )
    return body + struct.pack("<I", zlib.crc32(body))
