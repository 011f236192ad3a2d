"""Loading the model for serving: device choice, overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.core.serving_model import ModelUnavailable, load_serving_model, resolve_device
from tests.service.conftest import SettingsFactory
from tests.service.support import DIM, RANK


def test_defaults_come_from_the_checkpoint(make_settings: SettingsFactory) -> None:
    model = load_serving_model(make_settings())
    assert (model.rank, model.dim, model.ell) == (RANK, DIM, DIM)
    assert model.decay is None
    assert model.device == resolve_device("auto")


def test_settings_override_rank_and_decay(make_settings: SettingsFactory) -> None:
    model = load_serving_model(make_settings(rank=2, oversample=3, half_life_s=60.0))
    assert (model.rank, model.oversample, model.ell) == (2, 3, 5)
    assert model.decay is not None and model.decay.half_life_s == 60.0
    assert load_serving_model(make_settings(half_life_s=0)).decay is None


def test_missing_checkpoint_names_the_path_and_the_fix(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    with pytest.raises(ModelUnavailable, match="make model") as info:
        load_serving_model(make_settings(model_path=tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(info.value)


def test_rank_above_dimension_is_refused(make_settings: SettingsFactory) -> None:
    with pytest.raises(ModelUnavailable, match="SOLAR_RANK"):
        load_serving_model(make_settings(rank=DIM + 1))


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ModelUnavailable, match="CUDA"):
            resolve_device("cuda")
