"""Checkpoints: round trip (same scores, same version), content versioning, CheckpointError,
legacy parameter names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from model.checkpoint import (
    CONFIG_FILE,
    LEGACY_PREFIXES,
    WEIGHTS_FILE,
    CheckpointError,
    checkpoint_version,
    load_checkpoint,
    save_checkpoint,
    upgrade_state_dict,
)
from model.config import RankerConfig
from model.modes import ScoreRequest
from model.ranker import Ranker
from model.vocabulary import Vocabulary

VOCAB = Vocabulary(tuple(str(i) for i in range(100, 120)), ("click", "like"))
CONFIG = RankerConfig(n_items=VOCAB.n_items, n_actions=VOCAB.n_actions, dim=16, heads=2, rank=4)


def make_ranker(seed: int = 0) -> Ranker:
    torch.manual_seed(seed)
    return Ranker(CONFIG).eval()


def scores(ranker: Ranker) -> list[torch.Tensor]:
    """Scores of two users in the three serving modes."""
    gen = torch.Generator().manual_seed(5)
    tokens = torch.randn(4, 16, generator=gen)
    basis = torch.linalg.qr(torch.randn(16, 4, generator=gen))[0]
    req = ScoreRequest(
        candidates=torch.arange(1, 21),
        interests=tokens,
        history_items=torch.tensor([3, 5, 7, 5]),
        history_actions=torch.tensor([1, 2, 0, 1]),
        weights=torch.tensor([0.2, 0.5, 0.9, 1.0]),
        basis=basis,
    )
    with torch.no_grad():
        return [
            s
            for mode in ("svd", "svd_exact", "softmax")
            for s in ranker.score_requests(mode, [req])
        ]


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Ranker, str]:
    ranker = make_ranker()
    version = save_checkpoint(tmp_path / "ckpt", ranker, VOCAB, meta={"auc": 0.75})
    return tmp_path / "ckpt", ranker, version


def test_round_trip_gives_same_scores_and_version(saved: tuple[Path, Ranker, str]) -> None:
    path, ranker, version = saved
    loaded = load_checkpoint(path)
    assert loaded.version == version == checkpoint_version(path)
    assert len(version) == 16 and int(version, 16) >= 0
    assert loaded.ranker.config == CONFIG
    assert not loaded.ranker.training
    assert loaded.meta == {"auc": 0.75}
    assert loaded.vocab == VOCAB
    for a, b in zip(scores(ranker), scores(loaded.ranker), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_version_is_the_content(saved: tuple[Path, Ranker, str], tmp_path: Path) -> None:
    path, ranker, version = saved
    assert save_checkpoint(tmp_path / "again", ranker, VOCAB, meta={"auc": 0.75}) == version
    with torch.no_grad():
        ranker.mlp.fc1.bias[0] += 1e-3
    changed = save_checkpoint(tmp_path / "changed", ranker, VOCAB, meta={"auc": 0.75})
    assert changed != version
    assert save_checkpoint(tmp_path / "other", make_ranker(seed=1), VOCAB) != version
    assert load_checkpoint(tmp_path / "changed").version == changed


def test_version_ignores_training_metadata(saved: tuple[Path, Ranker, str], tmp_path: Path) -> None:
    """Retraining with the same seed gives the same version, whatever the wall time was."""
    path, ranker, version = saved
    assert save_checkpoint(tmp_path / "slow", ranker, VOCAB, meta={"wall_s": 129.2}) == version
    other_vocab = Vocabulary(VOCAB.items[::-1], VOCAB.actions)  # same sizes, other ids
    assert save_checkpoint(tmp_path / "renamed", ranker, other_vocab) != version


def test_legacy_parameter_names_still_load(saved: tuple[Path, Ranker, str], tmp_path: Path) -> None:
    """Checkpoints written when the MLP was an nn.Sequential (mlp.0/2/4) keep loading."""
    from safetensors.torch import load_file, save_file

    path, ranker, _ = saved
    tensors = load_file(str(path / WEIGHTS_FILE))
    legacy = {
        k.replace("mlp.fc1.", "mlp.0.")
        .replace("mlp.fc2.", "mlp.2.")
        .replace("mlp.out.", "mlp.4."): v
        for k, v in tensors.items()
    }
    assert "mlp.0.weight" in legacy
    old = tmp_path / "legacy"
    old.mkdir()
    (old / "config.json").write_bytes((path / "config.json").read_bytes())
    save_file(legacy, str(old / WEIGHTS_FILE))
    loaded = load_checkpoint(old)
    for name, tensor in ranker.state_dict().items():
        torch.testing.assert_close(loaded.ranker.state_dict()[name], tensor)


# The modes that existed when the legacy names were written: a later mode has no old names.
@pytest.mark.parametrize("mode", ["svd", "linear", "elastic", "mean"])
def test_legacy_state_dicts_are_upgraded_to_load_strictly(mode: str) -> None:
    """A state dict under the names used before the heads were named modules loads as is."""
    torch.manual_seed(3)
    config = RankerConfig(n_items=30, dim=16, heads=2, rank=4, mlp_hidden=16, mode=mode)  # type: ignore[arg-type]
    current = Ranker(config).state_dict()
    legacy = {}
    for name, tensor in current.items():
        for old, new in LEGACY_PREFIXES:
            if name.startswith(new):
                name = old + name[len(new) :]
                break
        legacy[name] = tensor
    assert legacy.keys() != current.keys()  # the MLP at least was renamed
    fresh = Ranker(config)
    fresh.load_state_dict(upgrade_state_dict(legacy))  # strict: every name matches
    for name, tensor in fresh.state_dict().items():
        torch.testing.assert_close(tensor, current[name])


def test_save_rejects_a_vocabulary_of_another_size(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not match"):
        save_checkpoint(tmp_path / "x", make_ranker(), Vocabulary(("1", "2")))


def _edit_config(path: Path, edit: object) -> None:
    document = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps(edit(document) if callable(edit) else edit))


def _with(document: dict[str, object], **changes: object) -> dict[str, object]:
    return {**document, **changes}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ("not json {", "malformed"),
        ([1, 2, 3], "malformed"),
        (lambda doc: _with(doc, config=_with(doc["config"], heads=3)), "malformed"),
        (lambda doc: _with(doc, config=_with(doc["config"], colour="red")), "malformed"),
        (lambda doc: {k: v for k, v in doc.items() if k != "items"}, "malformed"),
        (lambda doc: _with(doc, items=doc["items"][:-1]), "vocabulary"),
        (lambda doc: _with(doc, items=doc["items"][:-1] + doc["items"][:1]), "duplicate"),
        (lambda doc: _with(doc, meta=[1]), "malformed"),
        (lambda doc: _with(doc, config=_with(doc["config"], dim=32, heads=4)), "weights"),
    ],
)
def test_malformed_config_is_a_checkpoint_error(
    saved: tuple[Path, Ranker, str], edit: object, match: str
) -> None:
    path, _, _ = saved
    if isinstance(edit, str):
        (path / CONFIG_FILE).write_text(edit)
    else:
        _edit_config(path, edit)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_numeric_item_ids_in_a_hand_written_config(saved: tuple[Path, Ranker, str]) -> None:
    path, _, _ = saved
    _edit_config(path, lambda doc: _with(doc, items=[int(i) for i in doc["items"]]))
    assert load_checkpoint(path).vocab.item_row(105) == 6


def test_missing_or_unreadable_files_are_checkpoint_errors(
    saved: tuple[Path, Ranker, str], tmp_path: Path
) -> None:
    path, _, _ = saved
    with pytest.raises(CheckpointError, match="has no"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(path / WEIGHTS_FILE)  # a file, not a directory
    (path / CONFIG_FILE).write_bytes(b"\xff\xfe{}")
    with pytest.raises(CheckpointError, match="malformed"):
        load_checkpoint(path)

    no_weights = tmp_path / "no-weights"
    shutil.copytree(path, no_weights)
    (no_weights / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"has no {WEIGHTS_FILE}"):
        load_checkpoint(no_weights)


def test_corrupt_weights_are_checkpoint_errors(saved: tuple[Path, Ranker, str]) -> None:
    path, _, _ = saved
    blob = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)
    (path / WEIGHTS_FILE).write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("mode", "served"),
    [
        ("svd", ("svd", "svd_exact", "softmax")),
        ("softmax", ("svd", "svd_exact", "softmax")),
        ("elastic", ("elastic",)),
        ("linear", ("linear",)),
        ("mean", ("mean",)),
        ("lifelong", ("lifelong",)),
        ("lifelong+readout", ("svd", "svd_exact", "softmax", "lifelong")),
    ],
)
def test_a_checkpoint_says_which_modes_it_serves(
    mode: str, served: tuple[str, ...], tmp_path: Path
) -> None:
    trained, readout = mode.removesuffix("+readout"), mode.endswith("+readout")
    recent = 1 if trained == "lifelong" else 0  # lifelong: a window of at least one event
    config = RankerConfig(
        n_items=4,
        dim=8,
        heads=2,
        rank=2,
        mode=trained,  # type: ignore[arg-type]
        recent_tokens=recent,
        svd_readout=readout,
    )
    ranker = Ranker(config)
    save_checkpoint(tmp_path, ranker, Vocabulary(("a", "b", "c")))
    assert load_checkpoint(tmp_path).served_modes == served


def test_a_newer_field_at_its_default_is_left_out_for_earlier_releases(tmp_path: Path) -> None:
    """A model without the repeat channel writes no ``repeat_buckets`` (a release that
    predates the field refuses unknown keys, and the model version stays what it was); one
    with the channel writes it, and both load back equal."""
    plain = json.loads(json.dumps(CONFIG.to_dict()))
    assert "repeat_buckets" not in plain and RankerConfig.from_dict(plain) == CONFIG
    assert "svd_readout" not in plain  # nor the read-out, at its default
    lifelong = RankerConfig(n_items=20, mode="lifelong", recent_tokens=4, repeat_buckets=32)
    data = lifelong.to_dict()
    assert data["repeat_buckets"] == 32 and RankerConfig.from_dict(data) == lifelong
    directory = tmp_path / "lifelong"
    save_checkpoint(directory, Ranker(lifelong), Vocabulary(tuple(map(str, range(19))), ()))
    assert load_checkpoint(directory).ranker.config == lifelong


def test_a_readout_is_saved_and_loaded_with_its_weights(tmp_path: Path) -> None:
    config = RankerConfig(n_items=20, mode="lifelong", recent_tokens=4, svd_readout=True)
    assert config.to_dict()["svd_readout"] is True
    ranker = Ranker(config)
    save_checkpoint(tmp_path, ranker, Vocabulary(tuple(map(str, range(19))), ()))
    loaded = load_checkpoint(tmp_path).ranker
    assert loaded.config == config and loaded.readout is not None and ranker.readout is not None
    for mine, theirs in zip(ranker.readout.parameters(), loaded.readout.parameters(), strict=True):
        assert torch.equal(mine, theirs)
