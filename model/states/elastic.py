"""The ELASTIC dispatcher's serving state: k interest tokens kept by an online softmax.

Training (``model.layers.ElasticDispatcher``) computes, per head h and dispatcher query i,
t_{h,i} = Σ_j softmax_j(q_{h,i}·k_{h,j}/√d_h + log w_j) v_{h,j} over the N events, and the
tokens W_O concat_h t_h. Here each (h, i) keeps the online-softmax triple (FlashAttention's):
m (running max of the logits), l = Σ_j exp(logit_j − m) and a = Σ_j exp(logit_j − m) v_{h,j},
so t = a / l and a block of b events costs O(b·(d² + k·d)) whatever N is. Decay enters as the
logit bias log w_j = −(t_ref − t_j)/τ; moving t_ref forward by Δ lowers every logit by Δ/τ,
i.e. m by Δ/τ (a and l, relative to m, are unchanged). Arithmetic is float64; the blob
stores float32: k·H·(2 + d_h) values, 9,216 bytes at k=32, H=4, d=64, plus the header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from model.states.base import Decay, advance, as_rows, as_vector
from model.states.blob import Blob, decode_blob, encode_blob, expect_count, expect_kind
from model.states.errors import StateError, StateFormatError

__all__ = ["ElasticSpec", "ElasticState"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class ElasticSpec:
    """The dispatcher's frozen weights, float64, as right-multiplying matrices.

    Attributes:
        queries: (H, k, d_h) projected queries (W_Q q_i, split by head) / √d_h.
        w_k, w_v, w_o: (d, d) W_Kᵀ, W_Vᵀ, W_Oᵀ (rows @ w_k = K).
    """

    queries: Array
    w_k: Array
    w_v: Array
    w_o: Array

    @property
    def heads(self) -> int:
        return int(self.queries.shape[0])

    @property
    def tokens(self) -> int:
        return int(self.queries.shape[1])

    @property
    def dim(self) -> int:
        return int(self.w_k.shape[0])

    def split(self, x: Array) -> Array:
        """(b, d) → (H, b, d_h)."""
        b = x.shape[0]
        return x.reshape(b, self.heads, -1).transpose(1, 0, 2)


@dataclass(frozen=True)
class ElasticState:
    """Online-softmax state of one user. m, l (H, k); a (H, k, d_h); see the module docstring.

    An (h, i) with l = 0 has seen nothing (m is then meaningless and kept at 0).
    """

    m: Array
    l: Array  # noqa: E741 (the normaliser's name in the online-softmax literature)
    a: Array
    n: int = 0
    n_eff: float = 0.0
    t_ref: float | None = None
    tag: str = ""

    kind = "elastic"
    residual_ratio = 0.0

    @property
    def token_count(self) -> int:
        """The k dispatcher tokens candidates attend to."""
        return int(self.m.shape[1])

    @property
    def singular_values(self) -> Array:
        return np.zeros(0)

    @classmethod
    def empty(cls, spec: ElasticSpec, tag: str = "") -> ElasticState:
        H, k = spec.heads, spec.tokens
        zeros = np.zeros((H, k))
        return cls(zeros, zeros.copy(), np.zeros((H, k, spec.dim // H)), tag=tag)

    @classmethod
    def from_rows(
        cls, rows: Array, ts: Array, spec: ElasticSpec, decay: Decay | None, tag: str = ""
    ) -> ElasticState:
        """The state of rows (N, d) at times ts (N,): one block into the empty state (the
        online softmax of one block is the batch softmax)."""
        return cls.empty(spec, tag).append(rows, ts, spec, decay)

    def append(
        self, rows: Array, ts: Array, spec: ElasticSpec, decay: Decay | None
    ) -> ElasticState:
        """Absorb the events rows (b, d) at times ts (b,) (any order); returns the new state."""
        X = as_rows(rows, spec.dim)
        t = as_vector(ts, X.shape[0], "timestamps")
        assert t is not None
        if self.m.shape != (spec.heads, spec.tokens):
            raise StateError(f"state of shape {self.m.shape} for a spec of {spec.queries.shape}")
        clock = advance(self.t_ref, t, decay)
        m_old = self.m + clock.shift  # the old logits, seen from the new t_ref
        K, V = spec.split(X @ spec.w_k), spec.split(X @ spec.w_v)  # (H, b, d_h)
        logits = spec.queries @ K.transpose(0, 2, 1) + clock.log_w  # (H, k, b)
        seen = self.l > 0  # (H, k)
        m_new = np.maximum(np.where(seen, m_old, -np.inf), logits.max(axis=-1))  # (H, k)
        alpha = np.where(seen, np.exp(np.minimum(m_old - m_new, 0.0)), 0.0)  # (H, k)
        p = np.exp(logits - m_new[..., None])  # (H, k, b)
        return replace(
            self,
            m=m_new,
            l=self.l * alpha + p.sum(axis=-1),
            a=self.a * alpha[..., None] + p @ V,  # (H, k, d_h)
            n=self.n + X.shape[0],
            n_eff=self.n_eff * math.exp(clock.shift) + float(np.exp(clock.log_w).sum()),
            t_ref=clock.t_ref,
        )

    def tokens(self, spec: ElasticSpec) -> Array:
        """The k dispatcher tokens W_O concat_h a_h / l_h, (k, d); zeros with no history."""
        if self.n == 0:
            return np.zeros((spec.tokens, spec.dim))
        ratio = self.a / np.where(self.l > 0, self.l, 1.0)[..., None]  # (H, k, d_h)
        k = ratio.shape[1]
        return ratio.transpose(1, 0, 2).reshape(k, -1) @ spec.w_o  # (k, d)

    # ----------------------------------------------------------------- serialization
    @property
    def dims(self) -> tuple[int, int, int]:
        H, k, dh = self.a.shape
        return H, k, dh

    @property
    def nbytes(self) -> int:
        return len(self.to_bytes())

    def to_bytes(self) -> bytes:
        values = np.concatenate((self.m.ravel(), self.l.ravel(), self.a.ravel()))
        return encode_blob(self.kind, self.n, self.n_eff, self.t_ref, self.dims, self.tag, values)

    @classmethod
    def from_blob(cls, blob: Blob) -> ElasticState:
        """The state of a decoded family (version-3) blob of kind ``elastic``."""
        expect_kind(blob, cls.kind)
        H, k, dh = blob.dims
        expect_count(blob, H * k * (2 + dh))
        v = blob.values
        l = v[H * k : 2 * H * k].reshape(H, k)  # noqa: E741
        if min(blob.dims) < 1 or np.any(l < 0):
            raise StateFormatError(f"elastic state blob: dimensions {blob.dims}, or l < 0")
        return cls(
            v[: H * k].reshape(H, k).copy(),
            l.copy(),
            v[2 * H * k :].reshape(H, k, dh).copy(),
            n=blob.n,
            n_eff=blob.n_eff,
            t_ref=blob.t_ref,
            tag=blob.tag,
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> ElasticState:
        return cls.from_blob(decode_blob(blob))
