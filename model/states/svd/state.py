"""Per-user low-rank state: the truncated SVD of a (recency-weighted) behaviour history.

For a history X (N×d) with weights w, the state holds the rank-ℓ truncated SVD
W^{1/2} X ≈ U diag(σ) Vᵀ without U, plus s = Σ w_j x_j, n_eff = Σ w_j, the event count n,
the reference time t_ref and the residual energy ρ dropped by truncation (docs/DESIGN.md §2);
for the `svd` hybrid also the user's latest events (``recent``, kept by the svd builder).

Invariants kept by every constructor and by :meth:`LowRankState.append`:

* ``sigma`` (ℓ,) is non-negative and descending; ``V`` (d×ℓ) has orthonormal columns;
* sign convention: every column v_k of V satisfies v_kᵀ s ≥ 0;
* ℓ = min(rank + oversample, d) is fixed for the life of the state.

Arithmetic is float64 in memory; :meth:`LowRankState.to_bytes` stores float32 (the family's
format 3, ``model.states.blob``; formats 1 and 2 of earlier releases still load).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from model.config import DEFAULT_OVERSAMPLE, LIVE_TOKEN_RTOL
from model.states.base import Clock, Decay, advance, as_rows, as_vector
from model.states.blob import Blob, decode_blob, encode_blob, expect_count, expect_kind
from model.states.errors import StateError, StateFormatError
from model.states.svd.brand import orient, update_factors
from model.states.svd.recent import RecentEvents
from model.states.svd.repeats import RepeatCounts

__all__ = ["DEFAULT_OVERSAMPLE", "LIVE_TOKEN_RTOL", "LowRankState"]

Array = NDArray[np.float64]


def _weighted(
    weights: ArrayLike | None,
    ts: ArrayLike | None,
    n: int,
    t_ref: float | None,
    decay: Decay | None,
) -> tuple[Array, Clock | None]:
    """The weights (n,) of n rows, times their decay seen from the new t_ref, and the block's
    clock (None without times: t_ref stays)."""
    w = as_vector(weights, n, "weights")
    w = np.ones(n) if w is None else w
    if np.any(w < 0):
        raise StateError("weights must be non-negative")
    t = as_vector(ts, n, "timestamps")
    if t is None:
        if decay is not None:
            raise StateError("decay needs timestamps")
        return w, None
    clock = advance(t_ref, t, decay)
    return (w if decay is None else w * np.exp(clock.log_w)), clock


@dataclass(frozen=True)
class LowRankState:
    """Rank-ℓ factors of one user's weighted history. Immutable: updates return a new state.

    Attributes:
        rank: served rank r (interest tokens used at scoring time), r ≤ ℓ.
        sigma: (ℓ,) singular values, descending.
        V: (d, ℓ) right singular vectors, orthonormal columns.
        s: (d,) weighted row sum Σ w_j x_j.
        n_eff: Σ w_j (equals n without decay).
        n: number of events absorbed.
        t_ref: reference time in unix seconds (latest event time seen), or None.
        residual: energy ρ = Σ of squared singular values dropped by truncation.
        tag: state tag naming the model (and settings) whose embeddings produced the rows;
            a state whose tag differs from the serving model's is rebuilt from the log.
        recent: the user's latest events (item/action rows) for the `svd` hybrid, or None;
            the svd builder keeps it up to date (:meth:`RecentEvents.merged`), the factors
            ignore it.
        repeats: `lifelong`'s hashed item counts, or None; kept up to date by the svd
            builder like ``recent`` (:meth:`RepeatCounts.merged`).
    """

    rank: int
    sigma: Array
    V: Array
    s: Array
    n_eff: float
    n: int
    t_ref: float | None = None
    residual: float = 0.0
    tag: str = ""
    recent: RecentEvents | None = None
    repeats: RepeatCounts | None = None

    kind: ClassVar[str] = "svd"  # its kind in the compressed-state family (model.states)

    # ----------------------------------------------------------------- constructors
    @staticmethod
    def _ell(rank: int, oversample: int, d: int) -> int:
        if rank < 1:
            raise StateError(f"rank must be ≥ 1, got {rank}")
        if oversample < 0:
            raise StateError(f"oversample must be ≥ 0, got {oversample}")
        if rank > d:
            raise StateError(f"rank {rank} exceeds the embedding dimension d={d}")
        return min(rank + oversample, d)

    @classmethod
    def empty(
        cls, d: int, rank: int, oversample: int = DEFAULT_OVERSAMPLE, tag: str = ""
    ) -> LowRankState:
        """The state of a user with no history: σ = 0 and V the first ℓ unit vectors."""
        ell = cls._ell(rank, oversample, d)
        return cls(
            rank=rank,
            sigma=np.zeros(ell),
            V=np.eye(d)[:, :ell].copy(),
            s=np.zeros(d),
            n_eff=0.0,
            n=0,
            tag=tag,
        )

    @classmethod
    def from_rows(
        cls,
        X: ArrayLike,
        rank: int,
        weights: ArrayLike | None = None,
        *,
        oversample: int = DEFAULT_OVERSAMPLE,
        ts: ArrayLike | None = None,
        decay: Decay | None = None,
        tag: str = "",
    ) -> LowRankState:
        """Batch truncated SVD of the rows X (N×d), the reference the incremental path matches.

        ``weights`` (N,) multiply the rows' squared contribution (rows are scaled by sqrt(w)).
        With ``ts`` (N,) and ``decay``, each weight is further multiplied by
        exp(-(max(ts) - t_j)/tau); ``ts`` alone only sets t_ref.
        """
        rows = as_rows(X)
        N, d = rows.shape
        ell = cls._ell(rank, oversample, d)
        w, clock = _weighted(weights, ts, N, None, decay)
        scaled = rows * np.sqrt(w)[:, None]
        # V must be complete (d×d) even when N < ℓ; for N ≥ d the thin SVD already is, and
        # full_matrices there would build an N×N U (800 MB at N = 10,000).
        _, sv, Vt = np.linalg.svd(scaled, full_matrices=N < d)
        sigma_all = np.zeros(d)
        sigma_all[: sv.shape[0]] = sv
        s = (rows * w[:, None]).sum(axis=0)
        V = orient(Vt.T[:, :ell], s)
        return cls(
            rank=rank,
            sigma=sigma_all[:ell].copy(),
            V=np.ascontiguousarray(V),
            s=s,
            n_eff=float(w.sum()),
            n=N,
            t_ref=None if clock is None else clock.t_ref,
            residual=float(np.sum(sigma_all[ell:] ** 2)),
            tag=tag,
        )

    # ----------------------------------------------------------------- properties
    @property
    def d(self) -> int:
        return int(self.V.shape[0])

    @property
    def ell(self) -> int:
        return int(self.sigma.shape[0])

    @property
    def token_count(self) -> int:
        """The r interest tokens candidates attend to (the hybrid's window aside)."""
        return self.rank

    @property
    def singular_values(self) -> Array:
        """The r served singular values σ_1..σ_r (r,), descending."""
        return self.sigma[: self.rank]

    @property
    def residual_ratio(self) -> float:
        """ρ / (Σσ² + ρ): the share of the history's energy the factors no longer hold."""
        total = float(np.sum(self.sigma**2)) + self.residual
        return self.residual / total if total > 0 else 0.0

    def interests(self, r: int | None = None) -> Array:
        """The r interest tokens I = diag(σ_1..σ_r) V_rᵀ / sqrt(n_eff), shape (r, d).

        IᵀI ≈ Xᵀ W X / n_eff (weighted second moment). A user with no history gets zeros.
        """
        r = self.rank if r is None else r
        if not 1 <= r <= self.ell:
            raise StateError(f"r must be in [1, {self.ell}], got {r}")
        if self.n_eff <= 0:
            return np.zeros((r, self.d))
        scale = self.sigma[:r] / math.sqrt(self.n_eff)
        # C order (V_rᵀ is a transposed view): torch.from_numpy keeps numpy's strides, and
        # attention over non-contiguous tokens runs at half speed.
        return np.ascontiguousarray(scale[:, None] * self.V[:, :r].T)

    def live_rank(self, r: int | None = None) -> int:
        """How many of the first r tokens are live: σ_k > 1e-6·σ_1 (0 for no history).

        The others (a history shorter than r, or of rank < r) carry no information and are
        left out of the softmax (docs/DESIGN.md §2), in serving as in training.
        """
        r = self.rank if r is None else r
        top = float(self.sigma[0]) if self.ell else 0.0
        if self.n_eff <= 0 or top <= 0:
            return 0
        return int(np.count_nonzero(self.sigma[:r] > LIVE_TOKEN_RTOL * top))

    # ----------------------------------------------------------------- updates
    def decayed_to(self, t: float, decay: Decay) -> LowRankState:
        """The state seen from a later time t: σ·e^{-Δ/2τ}; s, n_eff, ρ ·e^{-Δ/τ}."""
        clock = advance(self.t_ref, np.array([t]), decay)
        return self._aged(clock.t_ref, clock.shift)

    def _aged(self, t_ref: float, shift: float) -> LowRankState:
        """The state with its weights multiplied by exp(shift) (≤ 0), seen from ``t_ref``."""
        if shift == 0.0:
            return replace(self, t_ref=t_ref)
        factor = math.exp(shift)
        return replace(
            self,
            sigma=self.sigma * math.sqrt(factor),
            s=self.s * factor,
            n_eff=self.n_eff * factor,
            residual=self.residual * factor,
            t_ref=t_ref,
        )

    def append(
        self,
        rows: ArrayLike,
        weights: ArrayLike | None = None,
        *,
        ts: ArrayLike | None = None,
        decay: Decay | None = None,
    ) -> LowRankState:
        """Absorb new rows (b×d) with a Brand thin-SVD block update; returns the new state.

        ``weights`` (b,) as in :meth:`from_rows`. With ``ts`` and ``decay`` the state is first
        decayed to max(t_ref, max(ts)) and each new row weighted by its age from there, so
        events may arrive out of order. Cost O(d·ℓ²) a row for blocks of up to
        ``svd.brand.ROW_BY_ROW_MAX`` rows (Brand's update through the secular equation, row by
        row), O((ℓ+b)·d²) for a larger block (one SVD of the stacked rows,
        ``svd.brand.block_update``), independent of history length.
        """
        B = as_rows(rows, self.d)
        w, clock = _weighted(weights, ts, B.shape[0], self.t_ref, decay)
        state = self if clock is None else self._aged(clock.t_ref, clock.shift)
        scaled = B * np.sqrt(w)[:, None]
        sigma, V, dropped = update_factors(state.sigma, state.V, scaled)
        residual = state.residual + dropped
        s = state.s + (B * w[:, None]).sum(axis=0)
        return replace(
            state,
            sigma=sigma,
            V=np.ascontiguousarray(orient(V, s)),
            s=s,
            n_eff=state.n_eff + float(w.sum()),
            n=state.n + B.shape[0],
            residual=residual,
        )

    # ----------------------------------------------------------------- serialization
    @property
    def nbytes(self) -> int:
        """Size of :meth:`to_bytes` in bytes."""
        return len(self.to_bytes())

    def to_bytes(self) -> bytes:
        """The family's format-3 blob, kind svd (≤ 16 KB at d=64, ℓ=48; ``model.states.blob``)."""
        values = np.concatenate((self.sigma, self.V.ravel(), self.s))
        return encode_blob(
            self.kind,
            self.n,
            self.n_eff,
            self.t_ref,
            (self.d, self.ell, self.rank),
            self.tag,
            values,
            residual=self.residual,
            window=self.recent,
            repeats=self.repeats,
        )

    @classmethod
    def from_blob(cls, blob: Blob) -> LowRankState:
        """The state of a decoded blob of kind svd (any format)."""
        expect_kind(blob, cls.kind)
        d, ell, rank = blob.dims
        if not (1 <= rank <= ell <= d):
            raise StateFormatError(f"inconsistent dimensions rank={rank} ell={ell} d={d}")
        expect_count(blob, ell + d * ell + d)
        v = blob.values
        sigma = v[:ell]
        if np.any(sigma < 0):
            raise StateFormatError("state blob holds negative weights, energies or σ")
        return cls(
            rank=rank,
            sigma=sigma.copy(),
            V=v[ell : ell + d * ell].reshape(d, ell).copy(),
            s=v[ell + d * ell :].copy(),
            n_eff=blob.n_eff,
            n=blob.n,
            t_ref=blob.t_ref,
            residual=blob.residual,
            tag=blob.tag,
            recent=blob.window,
            repeats=blob.repeats,
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> LowRankState:
        """Inverse of :meth:`to_bytes`, and the reader of formats 1 and 2; raises
        StateFormatError on any malformed blob."""
        return cls.from_blob(decode_blob(blob))
