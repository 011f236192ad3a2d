"""The ranker's configuration: one frozen dataclass, carried inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

# Extra factors p a low-rank state keeps beyond the served rank r (ℓ = r + p, model.states.svd).
DEFAULT_OVERSAMPLE = 16
# Interest tokens with σ_k ≤ LIVE_TOKEN_RTOL·σ_1 carry no information and are masked out of
# the softmax, in training (model.layers) and serving (model.states.svd) alike (docs/DESIGN.md §2).
LIVE_TOKEN_RTOL = 1e-6
# Rows of `lifelong`'s hashed item counts (model.repeats, which imports it from here).
REPEAT_HASHES = 2
# The most buckets a row of `lifelong`'s item counts may have (2 rows of float32: 512 KiB).
MAX_REPEAT_BUCKETS = 65_536

# The names of the registry's entries (``model.modes``: what each mode is and does).
AttentionMode = Literal["svd", "svd_exact", "softmax", "linear", "elastic", "mean", "lifelong"]
ATTENTION_MODES: tuple[str, ...] = get_args(AttentionMode)


# Fields added after checkpoints were first written, with their defaults: left out of
# ``to_dict`` at the default (a release that predates a field refuses unknown keys).
OPTIONAL_FIELDS: dict[str, Any] = {"repeat_buckets": 0, "svd_readout": False}


class ConfigError(ValueError):
    """An invalid ranker configuration value."""


@dataclass(frozen=True)
class RankerConfig:
    """Hyper-parameters of :class:`model.ranker.Ranker`.

    Attributes:
        n_items: rows of the item table; row 0 is the shared out-of-vocabulary row.
        n_actions: rows of the action table; row 0 is "no action".
        dim: embedding size d.
        heads: attention heads H (d must be divisible by H).
        rank: served rank r (interest tokens).
        oversample: extra factors p kept by the incremental state (ℓ = r + p).
        mode: attention mode the model was trained with.
        mlp_hidden: width of the scoring MLP.
        half_life_s: recency half-life in seconds, None for no decay.
        elastic_tokens: k learnable interest queries of the ELASTIC-style dispatcher.
        recent_tokens: `svd` hybrid: the user's last k raw events join the r interest tokens
            (kept in the state as k item/action rows; 0 = plain SVD-Attention); `lifelong`:
            the window L of its short-term channel (≥ 1).
        repeat_buckets: `lifelong` only: K buckets a row of the repeat channel's hashed item
            counts (``model.repeats``; the state keeps 2·K float32), whose two features per
            candidate join the scoring MLP's input; 0 = no repeat channel.
        svd_readout: `lifelong` only: a second, one-channel scoring MLP trained beside the
            model on its detached `svd` attention outputs, so the checkpoint also serves
            `svd`, `svd_exact` and `softmax` from the same state (the lifelong weights are
            those of a model trained without it).
    """

    n_items: int
    n_actions: int = 1
    dim: int = 64
    heads: int = 4
    rank: int = 32
    oversample: int = DEFAULT_OVERSAMPLE
    mode: AttentionMode = "svd"
    mlp_hidden: int = 128
    half_life_s: float | None = None
    elastic_tokens: int = 32
    recent_tokens: int = 0
    repeat_buckets: int = 0
    svd_readout: bool = False

    def __post_init__(self) -> None:
        if self.n_items < 1 or self.n_actions < 1:
            raise ConfigError(
                f"n_items and n_actions must be ≥ 1: {self.n_items}, {self.n_actions}"
            )
        for name in ("dim", "heads", "mlp_hidden", "elastic_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        least = 1 if self.mode == "lifelong" else 0  # lifelong: its short-term window L
        if self.recent_tokens < least:
            raise ConfigError(
                f"recent_tokens must be ≥ {least} in mode {self.mode!r}, got {self.recent_tokens}"
            )
        self._check_repeats()
        if self.oversample < 0:
            raise ConfigError(f"oversample must be ≥ 0, got {self.oversample}")
        if self.dim % self.heads:
            raise ConfigError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if not 1 <= self.rank <= self.dim:
            raise ConfigError(f"rank must be in [1, dim={self.dim}], got {self.rank}")
        if self.mode not in ATTENTION_MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; expected one of {ATTENTION_MODES}")
        if self.half_life_s is not None and not self.half_life_s > 0:
            raise ConfigError(f"half_life_s must be positive or None, got {self.half_life_s}")

    def _check_repeats(self) -> None:
        """``repeat_buckets``: in range, `lifelong` only, H·K whole rows of d; ``svd_readout``:
        `lifelong` only."""
        if not 0 <= self.repeat_buckets <= MAX_REPEAT_BUCKETS:
            raise ConfigError(
                f"repeat_buckets must be in [0, {MAX_REPEAT_BUCKETS}], got {self.repeat_buckets}"
            )
        if not isinstance(self.svd_readout, bool):  # from_dict: never 1 or "false"
            raise ConfigError(f"svd_readout must be true or false, got {self.svd_readout!r}")
        for name in ("repeat_buckets", "svd_readout"):
            if getattr(self, name) and self.mode != "lifelong":
                raise ConfigError(f"{name} needs mode 'lifelong', not {self.mode!r}")
        if (REPEAT_HASHES * self.repeat_buckets) % self.dim:
            # the state's features carry the counts as whole rows of d (model.states.builders)
            raise ConfigError(
                f"{REPEAT_HASHES}·repeat_buckets must be a multiple of dim={self.dim}, "
                f"got repeat_buckets={self.repeat_buckets}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields, less those of :data:`OPTIONAL_FIELDS` at their default, so a checkpoint
        of a model that does not use a newer field stays loadable by earlier releases (and
        keeps its model version)."""
        data = asdict(self)
        for name, default in OPTIONAL_FIELDS.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankerConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        return cls(**data)
