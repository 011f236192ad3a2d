"""Settings: SOLAR_* environment, defaults, validation; `solar serve` start-up errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.api.server import main
from service.app import create_app
from service.core.serving_model import ModelUnavailable
from service.settings import DEFAULT_MODEL_PATH, Settings
from tests.service.conftest import SettingsFactory

ALL_VARIABLES = {
    "SOLAR_REDIS_URL": "redis://127.0.0.1:1/0",
    "SOLAR_MODEL_PATH": "/models/x",
    "SOLAR_DEVICE": "cpu",
    "SOLAR_RANK": "8",
    "SOLAR_OVERSAMPLE": "4",
    "SOLAR_HALF_LIFE_S": "3600",
    "SOLAR_LOG_CAP": "100",
    "SOLAR_MAX_CANDIDATES": "50",
    "SOLAR_MAX_EVENTS": "60",
    "SOLAR_MAX_BATCH": "7",
    "SOLAR_MAX_WAIT_MS": "0.5",
    "SOLAR_MAX_QUEUE": "9",
    "SOLAR_API_TOKEN": "t0k",
    "SOLAR_HOST": "0.0.0.0",
    "SOLAR_PORT": "9001",
}


def test_every_design_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ALL_VARIABLES.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.redis_url == "redis://127.0.0.1:1/0"
    assert s.model_path == Path("/models/x") and s.device == "cpu"
    assert (s.rank, s.oversample, s.half_life_s, s.log_cap) == (8, 4, 3600.0, 100)
    assert (s.max_candidates, s.max_events, s.max_batch, s.max_queue) == (50, 60, 7, 9)
    assert s.max_wait_s == pytest.approx(0.0005)
    assert s.token() == "t0k" and "t0k" not in repr(s)
    assert (s.host, s.port) == ("0.0.0.0", 9001)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.redis_url is None and s.model_path == DEFAULT_MODEL_PATH
    assert s.max_candidates == 10_000 and s.log_cap is None and s.dedup_window == 4_000
    assert s.token() is None and (s.host, s.port) == ("127.0.0.1", 8000)


def test_empty_redis_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLAR_REDIS_URL", "")
    assert Settings().redis_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SOLAR_DEVICE", "tpu"),
        ("SOLAR_MAX_BATCH", "0"),
        ("SOLAR_PASS_ROWS", "0"),
        ("SOLAR_PORT", "70000"),
        ("SOLAR_RANK", "x"),
        ("SOLAR_SERVE_DTYPE", "float16"),
        ("SOLAR_TORCH_THREADS", "0"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.anyio
async def test_startup_without_checkpoint_fails_clearly(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    app = create_app(make_settings(model_path=tmp_path / "missing"))
    with pytest.raises(ModelUnavailable, match="make model"):
        async with app.router.lifespan_context(app):
            pass


def test_serve_refuses_to_start_without_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SOLAR_MODEL_PATH", str(tmp_path / "missing"))
    with caplog.at_level(logging.ERROR):
        assert main(["--port", "0"]) == 1
    assert "make model" in caplog.text and str(tmp_path / "missing") in caplog.text


def test_serve_rejects_bad_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLAR_MAX_BATCH", "-1")
    assert main([]) == 2
