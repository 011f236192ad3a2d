"""The loaded model as the service uses it: checkpoint, device, serving rank, decay, key maps.

Request ids map to rows through the vocabulary's one index (``Vocabulary.item_index``). Event
logs store item and action *digests* (``service.store.eventlog``) so that a log survives a
model change; each loaded model therefore builds, from the same vocabulary, the log-side
tables: item digest → row and action code → row. Unknown ids and digests map to the shared
OOV row 0 / "no action" row 0.

A state carries a :class:`StateTag` (model version and half-life); it is built and parsed here
alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from model.checkpoint import WEIGHTS_FILE, Checkpoint, CheckpointError, load_checkpoint
from model.device import resolve_device as model_device
from model.modes import state_kind
from model.native import serving_ops
from model.states import Decay, StateBuilder, make_builder
from model.states import warm_up_kernels as warm_up_state_kernels
from service.core.items import CandidateRows, candidate_rows
from service.core.raw_ids import ByteIndex, RawCandidates
from service.core.raw_ids import warm_up as warm_up_id_kernels
from service.settings import Settings
from service.store.eventlog import action_key, item_key

__all__ = [
    "ModelUnavailable",
    "ServingModel",
    "StateTag",
    "load_serving_model",
    "require_checkpoint",
    "resolve_device",
    "warm_up_kernels",
]

logger = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The checkpoint is missing or unreadable; the message says what to do."""


def resolve_device(setting: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable("SOLAR_DEVICE=cuda but torch sees no CUDA device")
    return model_device(setting)


class StateTag(NamedTuple):
    """What a stored state was built with: the model version and the recency half-life.

    Written into every state blob as ``"<version>"`` or ``"<version>@h<half_life_s>"``; a
    state whose tag differs from the serving model's is rebuilt from the log rather than
    mixed with new events.
    """

    model_version: str
    half_life_s: float | None = None

    def __str__(self) -> str:
        if self.half_life_s is None:
            return self.model_version
        return f"{self.model_version}@h{self.half_life_s:g}"

    @classmethod
    def parse(cls, text: str) -> StateTag:
        """Inverse of ``str()``; an unreadable half-life parses as NaN (matches no model)."""
        version, sep, half_life = text.partition("@h")
        if not sep:
            return cls(version)
        try:
            return cls(version, float(half_life))
        except ValueError:
            return cls(version, math.nan)


def _digest_u64(digests: np.ndarray) -> np.ndarray:
    """(N,) 6-byte void digests → (N,) uint64 (zero-padded little-endian) for searchsorted."""
    raw = np.zeros((digests.shape[0], 8), dtype=np.uint8)
    raw[:, :6] = np.ascontiguousarray(digests).view(np.uint8).reshape(-1, 6)
    return raw.view("<u8").reshape(-1)


@dataclass(frozen=True)
class ServingModel:
    """A checkpoint ready to serve.

    Attributes:
        checkpoint: ranker (eval mode, on ``device``), vocabulary and version.
        rank: served rank r (settings override, else the checkpoint's).
        oversample: p, so a state keeps ℓ = min(r + p, d) factors.
        decay: recency decay, or None.
        item_keys / item_rows: sorted uint64 item digests and their embedding rows.
        action_rows: (256,) embedding row of each action code (0 where unknown).
    """

    checkpoint: Checkpoint
    device: torch.device
    rank: int
    oversample: int
    decay: Decay | None
    item_keys: np.ndarray
    item_rows: np.ndarray
    action_rows: np.ndarray

    @property
    def version(self) -> str:
        return self.checkpoint.version

    @property
    def item_index(self) -> dict[int | str, int]:
        """External item id → row (the vocabulary's index)."""
        return self.checkpoint.vocab.item_index

    @cached_property
    def item_bytes(self) -> ByteIndex:
        """The same mapping keyed by the ids' bytes, for candidates scanned from a body
        (``service.core.raw_ids``)."""
        return ByteIndex(self.checkpoint.vocab.items)

    @property
    def item_int_rows(self) -> np.ndarray | None:
        """Integer item id → row as one array (``Vocabulary.int_rows``), or None."""
        return self.checkpoint.vocab.int_rows

    def candidate_rows(
        self, candidates: Sequence[object], *, checked: bool = False
    ) -> CandidateRows:
        """A request's candidates mapped to rows: spans of a body's bytes through
        :attr:`item_bytes` (compiled), values through the index
        (``service.core.items.candidate_rows``; ``checked``: already known to be ints or
        1-256 character strings).

        Raises:
            InvalidInput: an unchecked candidate that is not an item id.
        """
        if isinstance(candidates, RawCandidates):
            return self.item_bytes.rows(candidates)
        return candidate_rows(
            candidates, self.item_index, checked=checked, int_rows=self.item_int_rows
        )

    @property
    def state_tag(self) -> StateTag:
        """Tag of the states this model writes."""
        return StateTag(self.version, None if self.decay is None else self.decay.half_life_s)

    @property
    def dim(self) -> int:
        return self.checkpoint.ranker.config.dim

    @cached_property
    def served_modes(self) -> tuple[str, ...]:
        """The /rank modes this checkpoint serves (``model.modes.served_modes``; read on every
        /rank, so derived once)."""
        return self.checkpoint.served_modes

    @property
    def default_mode(self) -> str:
        """The /rank mode of a request without one: the model's trained mode."""
        return self.checkpoint.ranker.config.mode

    @property
    def state_kind(self) -> str:
        """The kind of per-user state this model keeps (``svd``, ``elastic``, ...)."""
        return state_kind(self.checkpoint.ranker.config.mode)

    @cached_property
    def states(self) -> StateBuilder:
        """Builds and updates this model's kind of user state (weights copied once)."""
        return make_builder(
            self.checkpoint.ranker,
            rank=self.rank,
            oversample=self.oversample,
            decay=self.decay,
            tag=str(self.state_tag),
        )

    @property
    def ell(self) -> int:
        return min(self.rank + self.oversample, self.dim)

    @property
    def recent_tokens(self) -> int:
        """k latest events the `svd` hybrid keeps in the state (0: plain SVD-Attention)."""
        return self.checkpoint.ranker.config.recent_tokens

    def log_rows(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Item and action embedding rows (N,) int64 of decoded log records (N,)."""
        if records.shape[0] == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        actions = self.action_rows[records["action"].astype(np.int64)]
        if self.item_keys.size == 0:
            return np.zeros(records.shape[0], dtype=np.int64), actions
        keys = _digest_u64(records["item"])
        pos = np.searchsorted(self.item_keys, keys).clip(max=self.item_keys.size - 1)
        items = np.where(self.item_keys[pos] == keys, self.item_rows[pos], 0)
        return items.astype(np.int64), actions

    def embed(self, items: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Event rows x_j = E_item[i_j] + E_action[a_j] as float64 (N, d), via the ranker (the
        state builder's embedding)."""
        return self.states.embed(items, actions)


def _item_tables(checkpoint: Checkpoint) -> tuple[np.ndarray, np.ndarray]:
    items = checkpoint.vocab.items
    digests = np.frombuffer(b"".join(item_key(i) for i in items), dtype="V6")
    keys = _digest_u64(digests) if items else np.zeros(0, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    keys, rows = keys[order], (np.arange(len(items), dtype=np.int64) + 1)[order]
    if keys.size > 1 and np.any(keys[1:] == keys[:-1]):
        logger.warning("item digests collide in the vocabulary; logs map them to one row")
    return keys, rows


def _action_table(checkpoint: Checkpoint) -> np.ndarray:
    table = np.zeros(256, dtype=np.int64)
    for row, action in enumerate(checkpoint.vocab.actions, start=1):
        code = action_key(action)
        if table[code]:
            logger.warning("action %r shares its log code with another action", action)
            continue
        table[code] = row
    return table


def _decay(settings: Settings, checkpoint: Checkpoint) -> Decay | None:
    half_life_s = settings.half_life_s
    if half_life_s is None:
        half_life_s = checkpoint.ranker.config.half_life_s
    return Decay(half_life_s) if half_life_s else None


def warm_up_kernels() -> None:
    """Compile every numba kernel the service runs (the state updates', the candidate
    scan's) and build the serving pass's native module (``model.native``), or load them from
    their caches (~0.5 s): a model load calls it, and ``make install`` and the image build call
    it once so that no process compiles (~11 s for numba, ~30 s for the C++)."""
    warm_up_state_kernels()
    warm_up_id_kernels()
    serving_ops()


def require_checkpoint(path: str | Path) -> Path:
    """``path`` if it holds a checkpoint, else ModelUnavailable saying how to make one."""
    path = Path(path)
    if not (path / WEIGHTS_FILE).is_file():
        raise ModelUnavailable(
            f"no model checkpoint at {path.resolve()} (expected {WEIGHTS_FILE} there): "
            "run `make model` to train the default one, or set SOLAR_MODEL_PATH"
        )
    return path


def load_serving_model(settings: Settings) -> ServingModel:
    """Load ``settings.model_path`` onto the configured device.

    Raises:
        ModelUnavailable: naming the path and how to create the default model.
    """
    path = require_checkpoint(settings.model_path)
    device = resolve_device(settings.device)
    try:
        checkpoint = load_checkpoint(path, device=device)
    except CheckpointError as exc:
        raise ModelUnavailable(f"cannot load the model at {path.resolve()}: {exc}") from exc
    config = checkpoint.ranker.config
    rank = settings.rank if settings.rank is not None else config.rank
    if rank > config.dim:
        raise ModelUnavailable(f"SOLAR_RANK={rank} exceeds the model dimension {config.dim}")
    oversample = settings.oversample if settings.oversample is not None else config.oversample
    keys, rows = _item_tables(checkpoint)
    warm_up_kernels()  # before the first event or /rank needs them
    logger.info(
        "model %s loaded from %s on %s (d=%d, r=%d, %d items)",
        checkpoint.version,
        path,
        device,
        config.dim,
        rank,
        len(checkpoint.vocab.items),
    )
    model = ServingModel(
        checkpoint=checkpoint,
        device=device,
        rank=rank,
        oversample=oversample,
        decay=_decay(settings, checkpoint),
        item_keys=keys,
        item_rows=rows,
        action_rows=_action_table(checkpoint),
    )
    model.item_bytes  # noqa: B018 (built now, not on the first /rank: ~1 s per million ids)
    return model
