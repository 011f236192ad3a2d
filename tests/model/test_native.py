"""The serving pass's native module: keyed on its source, built into a cache and imported
from it, a failed build named by the compiler's error."""

from __future__ import annotations

from pathlib import Path

import pytest

import model.native as native


def test_the_module_name_follows_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = native.module_name()
    assert shipped == native.module_name()  # stable for one source
    edited = tmp_path / "serving.cpp"
    edited.write_bytes(native.SOURCE.read_bytes() + b"\n// an edit\n")
    monkeypatch.setattr(native, "SOURCE", edited)
    assert native.module_name() != shipped  # never a stale module for a changed source


def test_the_cache_is_where_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLAR_NATIVE_CACHE", "/srv/solar-native")
    assert native.cache_dir() == Path("/srv/solar-native")
    monkeypatch.delenv("SOLAR_NATIVE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/x")
    assert native.cache_dir() == Path("/var/cache/x/solar/native")


@pytest.mark.slow
def test_a_build_lands_in_the_cache_and_later_imports_do_not_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = native.module_name()
    module = native._import_or_build(name, tmp_path)  # a fresh cache: builds (~13 s)
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.so"]  # no build leftovers
    assert callable(module.svd)  # type: ignore[attr-defined]

    def refuse(*args: object) -> None:
        raise AssertionError("built again")

    monkeypatch.setattr(native, "_build", refuse)
    again = native._import_or_build(name, tmp_path)
    assert callable(again.channels)  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_failed_build_names_the_compiler_error_and_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "serving.cpp"
    broken.write_text('#error "solar-test: this source does not compile"\n')
    monkeypatch.setattr(native, "SOURCE", broken)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError) as failure:
        native._import_or_build(native.module_name(), cache)
    message = str(failure.value)
    assert "solar-test: this source does not compile" in message
    assert str(cache) in message
    assert not any(cache.iterdir())  # nothing half-built is left to import


def test_an_unusable_cache_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RuntimeError, match="could not be built into .*file/native"):
        native._import_or_build(native.module_name(), blocker / "native")
