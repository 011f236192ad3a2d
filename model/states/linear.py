"""The FuXi-Linear retention channel's serving state: S_h and z_h per head, with decay.

Training (``model.layers.LinearTargetAttention``) computes, per head h,
S_h = Σ_j w_j φ(k_{h,j}) v_{h,j}ᵀ (d_h×d_h) and z_h = Σ_j w_j φ(k_{h,j}) (d_h), φ = elu + 1,
and o = W_O concat_h (φ(q_h) S_h) / max(φ(q_h)·z_h, 1e-6). Both sums are linear in the
weights, so a block of b events costs O(b·d²) and moving t_ref forward by Δ multiplies S, z
(and n_eff) by exp(−Δ/τ). Float64 in memory, float32 in the blob: H·d_h·(d_h + 1) values,
4,352 bytes at H=4, d=64, plus the header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from model.states.base import Decay, advance, as_rows, as_vector
from model.states.blob import Blob, decode_blob, encode_blob, expect_count, expect_kind
from model.states.errors import StateError, StateFormatError

__all__ = ["LinearSpec", "LinearState", "elu_feature"]

Array = NDArray[np.float64]


def elu_feature(x: Array) -> Array:
    """φ(x) = elu(x) + 1 (positive), as ``model.attention.elu_feature``."""
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


@dataclass(frozen=True)
class LinearSpec:
    """The linear head's key and value projections, float64: w_k, w_v (d, d) = W_Kᵀ, W_Vᵀ."""

    w_k: Array
    w_v: Array
    heads: int

    @property
    def dim(self) -> int:
        return int(self.w_k.shape[0])

    def split(self, x: Array) -> Array:
        """(b, d) → (H, b, d_h)."""
        return x.reshape(x.shape[0], self.heads, -1).transpose(1, 0, 2)


@dataclass(frozen=True)
class LinearState:
    """S (H, d_h, d_h) and z (H, d_h) of one user, weights seen from t_ref."""

    S: Array
    z: Array
    n: int = 0
    n_eff: float = 0.0
    t_ref: float | None = None
    tag: str = ""

    kind = "linear"
    residual_ratio = 0.0
    token_count = 0  # read as a whole, no tokens

    @property
    def singular_values(self) -> Array:
        return np.zeros(0)

    @classmethod
    def empty(cls, spec: LinearSpec, tag: str = "") -> LinearState:
        dh = spec.dim // spec.heads
        return cls(np.zeros((spec.heads, dh, dh)), np.zeros((spec.heads, dh)), tag=tag)

    @classmethod
    def from_rows(
        cls, rows: Array, ts: Array, spec: LinearSpec, decay: Decay | None, tag: str = ""
    ) -> LinearState:
        """The state of rows (N, d) at times ts (N,) (the batch sums)."""
        return cls.empty(spec, tag).append(rows, ts, spec, decay)

    def append(self, rows: Array, ts: Array, spec: LinearSpec, decay: Decay | None) -> LinearState:
        """Absorb the events rows (b, d) at times ts (b,) (any order); returns the new state."""
        X = as_rows(rows, spec.dim)
        t = as_vector(ts, X.shape[0], "timestamps")
        assert t is not None
        if self.z.shape != (spec.heads, spec.dim // spec.heads):
            raise StateError(f"state of shape {self.z.shape} for {spec.heads} heads")
        clock = advance(self.t_ref, t, decay)
        w = np.exp(clock.log_w)  # (b,)
        phi_k = elu_feature(spec.split(X @ spec.w_k)) * w[None, :, None]  # (H, b, d_h)
        V = spec.split(X @ spec.w_v)  # (H, b, d_h)
        age = math.exp(clock.shift)
        return replace(
            self,
            S=self.S * age + phi_k.transpose(0, 2, 1) @ V,  # (H, d_h, d_h)
            z=self.z * age + phi_k.sum(axis=1),  # (H, d_h)
            n=self.n + X.shape[0],
            n_eff=self.n_eff * age + float(w.sum()),
            t_ref=clock.t_ref,
        )

    def summary(self) -> Array:
        """[S_h | z_h] as one (H, d_h, d_h + 1) array (what the scoring pass reads)."""
        return np.concatenate((self.S, self.z[..., None]), axis=-1)

    # ----------------------------------------------------------------- serialization
    @property
    def nbytes(self) -> int:
        return len(self.to_bytes())

    def to_bytes(self) -> bytes:
        H, dh = self.z.shape
        values = np.concatenate((self.S.ravel(), self.z.ravel()))
        return encode_blob(self.kind, self.n, self.n_eff, self.t_ref, (H, dh, 0), self.tag, values)

    @classmethod
    def from_blob(cls, blob: Blob) -> LinearState:
        """The state of a decoded family (version-3) blob of kind ``linear``."""
        expect_kind(blob, cls.kind)
        H, dh, _ = blob.dims
        if H < 1 or dh < 1:
            raise StateFormatError(f"linear state blob with dimensions {blob.dims}")
        expect_count(blob, H * dh * (dh + 1))
        v = blob.values
        z = v[H * dh * dh :].reshape(H, dh)
        if np.any(z < 0):  # a sum of positive features
            raise StateFormatError("linear state blob holds a negative normaliser")
        return cls(
            v[: H * dh * dh].reshape(H, dh, dh).copy(),
            z.copy(),
            n=blob.n,
            n_eff=blob.n_eff,
            t_ref=blob.t_ref,
            tag=blob.tag,
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> LinearState:
        return cls.from_blob(decode_blob(blob))
