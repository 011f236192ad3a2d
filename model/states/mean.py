"""The `mean` baseline's serving state: s = Σ_j w_j x_j and n_eff = Σ_j w_j, with decay.

The head's output is proj(s / n_eff) for every candidate (``model.heads.MeanHead``). A block
costs O(b·d); the blob holds d float32 values (256 bytes at d=64) plus the header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from model.states.base import Decay, advance, as_rows, as_vector
from model.states.blob import Blob, decode_blob, encode_blob, expect_count, expect_kind
from model.states.errors import StateFormatError

__all__ = ["MeanState"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class MeanState:
    """s (d,) and n_eff of one user, weights seen from t_ref."""

    s: Array
    n: int = 0
    n_eff: float = 0.0
    t_ref: float | None = None
    tag: str = ""

    kind = "mean"
    residual_ratio = 0.0
    token_count = 0  # read as a whole, no tokens

    @property
    def singular_values(self) -> Array:
        return np.zeros(0)

    @classmethod
    def empty(cls, dim: int, tag: str = "") -> MeanState:
        return cls(np.zeros(dim), tag=tag)

    @classmethod
    def from_rows(cls, rows: Array, ts: Array, decay: Decay | None, tag: str = "") -> MeanState:
        """The state of rows (N, d) at times ts (N,)."""
        return cls.empty(np.shape(rows)[-1], tag).append(rows, ts, decay)

    def append(self, rows: Array, ts: Array, decay: Decay | None) -> MeanState:
        """Absorb the events rows (b, d) at times ts (b,) (any order); returns the new state."""
        X = as_rows(rows, self.s.shape[0])
        t = as_vector(ts, X.shape[0], "timestamps")
        assert t is not None
        clock = advance(self.t_ref, t, decay)
        w = np.exp(clock.log_w)  # (b,)
        age = math.exp(clock.shift)
        return replace(
            self,
            s=self.s * age + w @ X,
            n=self.n + X.shape[0],
            n_eff=self.n_eff * age + float(w.sum()),
            t_ref=clock.t_ref,
        )

    def pooled(self) -> Array:
        """s / n_eff (d,), the weighted mean row; zeros with no history."""
        return self.s / self.n_eff if self.n_eff > 0 else np.zeros_like(self.s)

    # ----------------------------------------------------------------- serialization
    @property
    def nbytes(self) -> int:
        return len(self.to_bytes())

    def to_bytes(self) -> bytes:
        dims = (self.s.shape[0], 0, 0)
        return encode_blob(self.kind, self.n, self.n_eff, self.t_ref, dims, self.tag, self.s)

    @classmethod
    def from_blob(cls, blob: Blob) -> MeanState:
        """The state of a decoded family (version-3) blob of kind ``mean``."""
        expect_kind(blob, cls.kind)
        d = blob.dims[0]
        if d < 1:
            raise StateFormatError(f"mean state blob with dimensions {blob.dims}")
        expect_count(blob, d)
        return cls(blob.values.copy(), n=blob.n, n_eff=blob.n_eff, t_ref=blob.t_ref, tag=blob.tag)

    @classmethod
    def from_bytes(cls, blob: bytes) -> MeanState:
        return cls.from_blob(decode_blob(blob))
