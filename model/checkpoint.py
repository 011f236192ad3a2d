"""Checkpoints: safetensors weights + a JSON config and vocabulary, versioned by content hash.

A checkpoint is a directory holding ``model.safetensors`` and ``config.json``
(``{"config": RankerConfig, "items": [...], "actions": [...], "meta": {...}}``).
No pickle: loading never executes code from the files. Weights saved under older parameter
names load through :func:`upgrade_state_dict`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from model.config import RankerConfig
from model.ranker import Ranker
from model.vocabulary import Vocabulary

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or inconsistent."""


# Parameter names of checkpoints written before the heads were named modules.
LEGACY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("mlp.0.", "mlp.fc1."),
    ("mlp.2.", "mlp.fc2."),
    ("mlp.4.", "mlp.out."),
    ("linear_attn.", "baselines.linear.attention."),
    ("elastic.", "baselines.elastic.dispatcher."),
    ("mean_proj.", "baselines.mean.proj."),
)


def upgrade_state_dict(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """``tensors`` with legacy parameter names renamed to the current ones."""
    upgraded: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        for old, new in LEGACY_PREFIXES:
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        upgraded[name] = tensor
    return upgraded


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model: the ranker (eval mode), its vocabulary and its content-hash version."""

    ranker: Ranker
    vocab: Vocabulary
    version: str
    meta: dict[str, Any]

    @property
    def served_modes(self) -> tuple[str, ...]:
        """The modes this checkpoint serves: svd, svd_exact and softmax from the factors, or
        its own baseline mode from its state, or `lifelong` (and the svd family through its
        read-out, if it has one). Its trained mode is the /rank default."""
        return self.ranker.served_modes()


def save_checkpoint(
    directory: str | Path, ranker: Ranker, vocab: Vocabulary, meta: dict[str, Any] | None = None
) -> str:
    """Write the checkpoint to ``directory`` and return its version (content hash)."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    if vocab.n_items != ranker.config.n_items or vocab.n_actions != ranker.config.n_actions:
        raise CheckpointError(
            f"vocabulary ({vocab.n_items} items, {vocab.n_actions} actions) does not match the "
            f"model ({ranker.config.n_items}, {ranker.config.n_actions})"
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in ranker.state_dict().items()}
    save_file(tensors, str(path / WEIGHTS_FILE))
    document = {
        "config": ranker.config.to_dict(),
        "items": list(vocab.items),
        "actions": list(vocab.actions),
        "meta": meta or {},
    }
    (path / CONFIG_FILE).write_text(json.dumps(document, indent=1, sort_keys=True))
    return checkpoint_version(path)


def checkpoint_version(directory: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of what defines the model: the config, the
    vocabularies and the weights. ``meta`` (training wall time, metrics) is left out, so
    retraining with the same data, settings and seed gives the same version."""
    path = Path(directory)
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            content = (path / name).read_bytes()
        except FileNotFoundError as exc:
            raise CheckpointError(f"checkpoint {path} has no {name}") from exc
        except OSError as exc:  # not a directory, a directory named like the file, ...
            raise CheckpointError(f"checkpoint {path}: cannot read {name}: {exc}") from exc
        digest.update(_model_defining(content) if name == CONFIG_FILE else content)
    return digest.hexdigest()[:16]


def _model_defining(config_json: bytes) -> bytes:
    """config.json without its ``meta``, canonically encoded (the raw bytes if unparsable:
    loading then reports the error)."""
    try:
        document = json.loads(config_json)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return config_json
    if isinstance(document, dict):
        document.pop("meta", None)
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _read_document(path: Path) -> tuple[RankerConfig, Vocabulary, dict[str, Any]]:
    """config.json → (config, vocabulary, meta); CheckpointError if anything is off."""
    try:
        document = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise TypeError(f"expected a JSON object, got {type(document).__name__}")
        config = RankerConfig.from_dict(document["config"])
        # Ids are strings; a hand-written file may hold numbers (the same ids).
        items = tuple(str(item) for item in document["items"])
        actions = tuple(str(action) for action in document.get("actions", ()))
        meta = document.get("meta", {})
        if not isinstance(meta, dict):
            raise TypeError(f"meta must be an object, got {type(meta).__name__}")
        vocab = Vocabulary(items, actions)
    except (KeyError, TypeError, ValueError) as exc:  # ValueError: JSON, UTF-8, ConfigError,
        # VocabularyError (a duplicate id)
        raise CheckpointError(f"checkpoint {path}: malformed {CONFIG_FILE}: {exc!r}") from exc
    if vocab.n_items != config.n_items or vocab.n_actions != config.n_actions:
        raise CheckpointError(
            f"checkpoint {path}: vocabulary ({vocab.n_items} items, {vocab.n_actions} actions) "
            f"does not match the config ({config.n_items}, {config.n_actions})"
        )
    return config, vocab, meta


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (safetensors only, no pickle)."""
    path = Path(directory)
    version = checkpoint_version(path)
    config, vocab, meta = _read_document(path)
    try:
        tensors = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable {WEIGHTS_FILE}: {exc}") from exc
    ranker = Ranker(config)
    try:
        ranker.load_state_dict(upgrade_state_dict(tensors))
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not match the config: {exc}") from exc
    ranker.to(device).eval()
    return Checkpoint(ranker=ranker, vocab=vocab, version=version, meta=meta)
