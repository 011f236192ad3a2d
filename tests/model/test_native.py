"""The serving pass's native module: keyed on its sources, built once into a cache (processes
starting together wait for one build) and imported from it without a compiler; a failed
build or import explained."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import model.native as native

ROOT = Path(__file__).resolve().parents[2]


def test_the_module_name_follows_every_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = native.module_name()
    assert shipped == native.module_name()  # stable for one set of sources
    assert native.HEADERS, "the kernels' headers are part of the key"
    edited = tmp_path / "serving.cpp"
    edited.write_bytes(native.SOURCE.read_bytes() + b"\n// an edit\n")
    monkeypatch.setattr(native, "SOURCE", edited)
    assert native.module_name() != shipped  # never a stale module for a changed source
    monkeypatch.undo()
    header = tmp_path / native.HEADERS[0].name
    header.write_bytes(native.HEADERS[0].read_bytes() + b"\n// an edit\n")
    monkeypatch.setattr(native, "HEADERS", (header, *native.HEADERS[1:]))
    assert native.module_name() != shipped  # nor for a changed kernel


def test_the_cache_is_where_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLAR_NATIVE_CACHE", "/srv/solar-native")
    assert native.cache_dir() == Path("/srv/solar-native")
    monkeypatch.delenv("SOLAR_NATIVE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/x")
    assert native.cache_dir() == Path("/var/cache/x/solar/native")


def test_the_kernels_run_on_torchs_intra_op_threads() -> None:
    """Built with OpenMP: without it at::parallel_for compiles to one plain call."""
    assert native.serving_ops().intra_op_parallel()


def _load_in_a_process(cache: Path, **env: str) -> subprocess.Popen[str]:
    code = "from model.native import serving_ops; assert serving_ops().intra_op_parallel()"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "SOLAR_NATIVE_CACHE": str(cache), **env},
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_processes_starting_together_build_once_then_import_without_a_compiler(
    tmp_path: Path,
) -> None:
    together = [_load_in_a_process(tmp_path) for _ in range(2)]
    logs = [proc.communicate(timeout=600)[1] for proc in together]
    assert [proc.returncode for proc in together] == [0, 0], logs
    assert sum("building solar's native serving module" in log for log in logs) == 1, logs
    name = native.module_name()
    assert (tmp_path / f"{name}.so").is_file()
    assert not (tmp_path / ".build" / name).exists()  # the build directory is cleaned up
    later = _load_in_a_process(tmp_path, CXX="/bin/false")  # a compiler would fail the build
    _, log = later.communicate(timeout=120)
    assert later.returncode == 0 and "building" not in log, log


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
    assert not list(cache.glob("*.so"))  # nothing half-built is left to import


def test_a_missing_compiler_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXX", "solar-test-no-such-compiler")
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler: `solar-test-no-such-compiler`"):
        native._import_or_build(native.module_name(), tmp_path)


def test_an_unusable_cache_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RuntimeError, match="could not be built into .*file/native"):
        native._import_or_build(native.module_name(), blocker / "native")


def test_a_broken_cached_module_is_named_with_what_to_do(tmp_path: Path) -> None:
    name = native.module_name()
    (tmp_path / f"{name}.so").write_bytes(b"not a shared object")
    with pytest.raises(RuntimeError, match=f"{name}.so does not import .*delete it"):
        native._import_or_build(name, tmp_path)
